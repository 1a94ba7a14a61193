"""A real RTSP server for the tests: GStreamer's gst-rtsp-server, run with the system python (it needs `gi`).

    /usr/bin/python3 tests/rtsp_server.py PORT [TLS_PEM]

serves a moving test pattern on 127.0.0.1:PORT at /h264 and /h265 (320x240, 15 fps, a keyframe every
second), over TCP and UDP, and prints "ready" once it listens. With TLS_PEM (certificate and key in one
PEM file) it speaks RTSPS instead. The tests kill, stop and restart it, and signal it:

    SIGUSR1  media on/off: the video stops while the sessions and their RTCP reports go on
    SIGUSR2  the video's timestamps jump 3 s back (a camera rebooted behind a restreamer); the tests let
             it run longer than that first (timestamps cannot go below 0)
"""
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtspServer  # noqa: E402

RAW = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1"
MOUNTS = {
    "/h264": f"( {RAW} ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! valve name=gate ! rtph264pay name=pay0 pt=96 )",
    "/h265": f"( {RAW} ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph265pay name=pay0 pt=96 )",
}


class Faults:
    """The media of every session: its gate (valve) and the offset added to its timestamps."""

    def __init__(self):
        self.gates, self.offset = [], 0

    def configure(self, factory, media) -> None:
        pipeline = media.get_element()
        gate, pay = pipeline.get_by_name("gate"), pipeline.get_by_name("pay0")
        if gate is not None:
            self.gates.append(gate)
        pay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._shift)

    def _shift(self, pad, info):
        if self.offset:
            buf = info.get_buffer()
            if buf.pts != Gst.CLOCK_TIME_NONE:
                buf.pts = max(0, buf.pts + self.offset)
            if buf.dts != Gst.CLOCK_TIME_NONE:
                buf.dts = max(0, buf.dts + self.offset)
        return Gst.PadProbeReturn.OK

    def toggle_media(self) -> bool:
        for gate in self.gates:
            gate.set_property("drop", not gate.get_property("drop"))
        return True  # keep the signal handler

    def jump_back(self) -> bool:
        self.offset -= 3 * Gst.SECOND
        return True


def main(port: int, tls_pem: str | None = None) -> None:
    Gst.init(None)
    faults = Faults()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, faults.toggle_media)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR2, faults.jump_back)
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
        factory.connect("media-configure", faults.configure)
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
