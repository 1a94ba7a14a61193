"""A real RTSP server for the tests: GStreamer's gst-rtsp-server, run with the system python (it needs `gi`).

    /usr/bin/python3 tests/rtsp_server.py PORT [TLS_PEM]

serves a moving test pattern on 127.0.0.1:PORT at /h264 and /h265 (320x240, 15 fps, a keyframe every
second), over TCP and UDP, and prints "ready" once it listens. With TLS_PEM (certificate and key in one
PEM file) it speaks RTSPS instead. The tests kill, stop and restart it.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtspServer  # noqa: E402

RAW = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1"
MOUNTS = {
    "/h264": f"( {RAW} ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 )",
    "/h265": f"( {RAW} ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph265pay name=pay0 pt=96 )",
}


def main(port: int, tls_pem: str | None = None) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    if tls_pem:
        auth = GstRtspServer.RTSPAuth()
        auth.set_tls_certificate(Gio.TlsCertificate.new_from_file(tls_pem))
        # An auth object (which holds the certificate) demands a login unless anonymous users get a role
        # that the factories let in.
        anonymous = GstRtspServer.RTSPToken()
        anonymous.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "anonymous")
        auth.set_default_token(anonymous)
        server.set_auth(auth)
    mounts = server.get_mount_points()
    for path, launch in MOUNTS.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)  # one encoder for all clients, like a camera
        if tls_pem:
            factory.add_role_from_structure(Gst.Structure.from_string(
                "anonymous, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])
        mounts.add_factory(path, factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:3])
