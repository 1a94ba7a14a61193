"""WebRTC ingest over WHIP (RFC 9725): cameras and browsers publish to POST /{stream_id}.

    whip = WhipServer(WhipConfig())
    source = whip.source("cam1")             # a Source like any other; frames once someone publishes
    gateway.add_subapp("/whip", whip.app())   # or, standalone: await whip.serve("0.0.0.0", 8080)

A publisher POSTs its SDP offer (Content-Type: application/sdp) to /whip/cam1 and gets 201 with the SDP
answer and a Location; DELETE on that Location ends the session. Candidates are gathered before answering
(no trickle ICE). aioice offers no 127.0.0.1 candidate, so a publisher on the same machine reaches the
server through one of its other addresses (the tests patch aioice to offer loopback instead). A new POST for a stream replaces its current session: a camera that rebooted must not
wait for the old session's ICE to time out.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from configs import SourceConfig, WhipConfig
from stream.frame import Frame
from stream.sources.source import Keep, Source


class WhipSource(Source):
    """The frames of whoever publishes to one stream id. A publisher leaving is a disconnect: the source
    waits (state "reconnecting") for the next one, and stream time carries on across publishers."""

    camera = True

    def __init__(self, stream_id: str, cfg: SourceConfig):
        super().__init__(f"whip://{stream_id}", cfg)
        self.max_retries = None  # pushed, not pulled: there is nothing to retry, only a publisher to wait for
        self.pc: RTCPeerConnection | None = None
        self._tracks: asyncio.Queue[MediaStreamTrack | None] = asyncio.Queue()  # None: closed

    async def _session(self, keep: Keep) -> AsyncIterator[Frame]:
        track = await self._tracks.get()
        if track is None:
            return
        self._last_frame = time.monotonic()  # a publisher is here: the frame watchdog is armed
        try:
            while True:
                try:
                    vf = await track.recv()
                except MediaStreamError:  # the publisher left (DELETE, ICE failure, a newer session)
                    return
                arrival = time.monotonic()
                pts = self._decoded(vf.time, arrival)
                if keep(pts):
                    yield Frame(await asyncio.to_thread(self.to_rgb, vf), pts, arrival)
        except asyncio.CancelledError:  # the frame watchdog: media stopped, the publisher may still resume
            if track.readyState == "live" and not self._closed:
                self._tracks.put_nowait(track)
            raise

    def _retry_delay(self) -> float:
        return 0.0

    def close(self) -> None:
        super().close()
        if self.pc is not None:
            asyncio.ensure_future(self.pc.close())
        self._tracks.put_nowait(None)  # wake a session waiting for a publisher


class WhipServer:
    """The WHIP endpoint for a set of registered streams (POST to an unregistered id is 404)."""

    def __init__(self, cfg: WhipConfig | None = None, source_cfg: SourceConfig | None = None):
        self.cfg, self.source_cfg = cfg or WhipConfig(), source_cfg or SourceConfig()
        self.sources: dict[str, WhipSource] = {}
        self._sessions: dict[str, tuple[str, RTCPeerConnection]] = {}  # session id -> (stream id, pc)
        self._runner: web.AppRunner | None = None
        mimes = {f"video/{c}" for c in self.cfg.codecs} | {"video/rtx"}
        self._codecs = [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.mimeType in mimes]

    def source(self, stream_id: str) -> WhipSource:
        """The source for `stream_id`, registered on first use (and anew once the old one was closed)."""
        if stream_id not in self.sources or self.sources[stream_id]._closed:
            self.sources[stream_id] = WhipSource(stream_id, self.source_cfg)
        return self.sources[stream_id]

    def remove(self, stream_id: str) -> None:
        """Unregister a stream and end its session; its publisher's next POST gets 404."""
        source = self.sources.pop(stream_id, None)
        if source is not None:
            source.close()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{stream_id}", self._publish)
        app.router.add_delete("/{stream_id}/{session_id}", self._unpublish, name="session")
        app.on_shutdown.append(lambda _: self.close_sessions())
        return app

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the endpoint on its own at http://host:port/whip/...; returns that base URL."""
        root = web.Application()
        root.add_subapp("/whip", self.app())
        self._runner = web.AppRunner(root)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return f"http://{host}:{self._runner.addresses[0][1]}/whip"

    async def close(self) -> None:
        for source in self.sources.values():
            source.close()
        await self.close_sessions()
        if self._runner is not None:
            await self._runner.cleanup()

    async def close_sessions(self) -> None:
        sessions, self._sessions = self._sessions, {}
        await asyncio.gather(*(pc.close() for _, pc in sessions.values()))

    def _authorize(self, request: web.Request) -> None:
        # before any lookup: without the token, a registered name and an unknown one must look the same
        if self.cfg.token is not None and request.headers.get("Authorization") != f"Bearer {self.cfg.token}":
            raise web.HTTPUnauthorized(text="bearer token required\n", headers={"WWW-Authenticate": "Bearer"})

    async def _publish(self, request: web.Request) -> web.Response:
        self._authorize(request)
        source = self.sources.get(request.match_info["stream_id"])
        if source is None or source._closed:
            raise web.HTTPNotFound(text="no such stream\n")
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="the offer must be Content-Type: application/sdp\n")
        offer = await self._read_offer(request)
        check_offer(offer)

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[
            RTCIceServer(s.urls, s.username, s.credential) for s in self.cfg.ice_servers]))
        tracks: list[MediaStreamTrack] = []
        pc.on("track", lambda track: tracks.append(track) if track.kind == "video" else None)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            for t in pc.getTransceivers():
                if t.kind == "video":
                    t.setCodecPreferences(self._codecs)
                else:  # audio is not ingested; refusing it spares decoding it
                    t.stop()
            await pc.setLocalDescription(await pc.createAnswer())
            if not tracks:
                raise ValueError("the offer sends no video")
        except Exception as e:  # aiortc's SDP parser raises assorted types on malformed input
            await pc.close()
            raise web.HTTPBadRequest(text=f"bad SDP offer: {e or type(e).__name__}\n")

        if source.pc is not None:  # a newer session replaces the current one
            await source.pc.close()
        source.pc = pc
        source._tracks.put_nowait(tracks[0])
        session_id = uuid.uuid4().hex
        self._sessions[session_id] = (source.status.spec, pc)

        @pc.on("connectionstatechange")
        async def _state():
            if pc.connectionState in ("failed", "closed"):
                self._sessions.pop(session_id, None)
                await pc.close()

        location = request.app.router["session"].url_for(stream_id=request.match_info["stream_id"], session_id=session_id)
        return web.Response(status=201, body=pc.localDescription.sdp.encode(), content_type="application/sdp",
                            headers={"Location": str(location)})

    async def _unpublish(self, request: web.Request) -> web.Response:
        self._authorize(request)
        session = self._sessions.pop(request.match_info["session_id"], None)
        if session is None or session[0] != f"whip://{request.match_info['stream_id']}":
            raise web.HTTPNotFound(text="no such session\n")
        await session[1].close()
        return web.Response(status=200)

    async def _read_offer(self, request: web.Request) -> str:
        # The limit checked here too: when this app is mounted under a gateway, the gateway's
        # client_max_size applies, not ours (and the gateway may have read the body already).
        limit = self.cfg.max_offer_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        body = await request.read()
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise web.HTTPBadRequest(text="the offer is not UTF-8 text\n") from None


FINGERPRINT = re.compile(r"a=fingerprint:(sha-1|sha-224|sha-256|sha-384|sha-512) [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+")


def check_offer(sdp: str) -> None:
    """Refuse, as 400, an offer that aiortc would take and then fail on after the 201 (in its DTLS or ICE
    tasks, where no one can answer the publisher): control characters (NUL), a truncated offer (no final
    line end), no DTLS fingerprint, no ICE credentials."""
    def bad(why: str):
        return web.HTTPBadRequest(text=f"bad SDP offer: {why}\n")

    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", sdp):
        raise bad("it holds control characters")
    if not sdp.startswith("v=0\r\n") and not sdp.startswith("v=0\n"):
        raise bad("it does not begin with v=0")
    if not sdp.endswith("\n"):
        raise bad("it is truncated (its last line has no line end)")
    lines = sdp.splitlines()
    if not any(line.startswith("m=video ") for line in lines):
        raise bad("the offer sends no video")
    if not any(FINGERPRINT.fullmatch(line.strip()) for line in lines):
        raise bad("no DTLS fingerprint (a=fingerprint:sha-256 ...)")
    for attribute in ("a=ice-ufrag:", "a=ice-pwd:"):
        if not any(line.startswith(attribute) and len(line) > len(attribute) for line in lines):
            raise bad(f"no ICE credentials ({attribute}...)")
