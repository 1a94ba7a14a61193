"""An RTSP server for the ingest benchmark: GStreamer's gst-rtsp-server serving an H.264 MP4 file as it is
(no re-encoding), run with the system python (it needs `gi`).

    /usr/bin/python3 bench/rtsp_file_server.py PORT FILE

serves FILE on 127.0.0.1:PORT at /cam and prints "ready" once it listens. Every reader gets a
pipeline of its own (`set_shared(False)`): a shared media restarts every reader's timestamps whenever
another joins. Each reader's stream starts at the file's beginning, paced at its frame rate, and ends
with the file.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(port: int, path: str) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    server.set_backlog(1024)  # many readers connect at once
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )')
    factory.set_shared(False)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_file_server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
