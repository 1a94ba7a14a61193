"""A WHIP publisher for the tests: aiortc sending the synthetic camera, and the loopback ICE workaround."""
from __future__ import annotations

import asyncio

import aioice.ice
import aiohttp
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack

from yarl import URL

from stream.synth import SynthWorld


@pytest.fixture
def loopback_ice(monkeypatch):
    """aioice leaves 127.0.0.1 out of its host candidates; with no other network in a test, offer it alone."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class SynthTrack(VideoStreamTrack):
    """The synthetic camera as a WebRTC track, at aiortc's pace (30 fps); while `paused` is set it sends
    nothing (the peer connection and its RTCP go on)."""

    def __init__(self, seed: int = 0, size: int = 64):
        super().__init__()
        self.world = SynthWorld(seed, width=size, height=size)
        self.paused = asyncio.Event()

    async def recv(self) -> av.VideoFrame:
        while self.paused.is_set():
            await asyncio.sleep(0.05)
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.world.frame_at(float(pts * time_base)), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class Publisher:
    """Publishes one track to a WHIP URL; `location` is the session to DELETE."""

    def __init__(self, url: str, codec: str = "VP8", seed: int = 0, token: str | None = None, ssl=None):
        self.url, self.codec, self.seed, self.token, self.ssl = url, codec, seed, token, ssl  # ssl: an SSLContext for https
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track: SynthTrack | None = None
        self.location: str | None = None
        self.answer: str | None = None

    async def start(self) -> Publisher:
        self.track = SynthTrack(self.seed)
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.mimeType == f"video/{self.codec}"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with aiohttp.ClientSession() as http:
            async with http.post(self.url, data=self.pc.localDescription.sdp, headers=headers, ssl=self.ssl) as r:
                assert r.status == 201, await r.text()
                assert r.content_type == "application/sdp"
                self.location, self.answer = str(r.url.join(URL(r.headers["Location"]))), await r.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer, "answer"))
        return self

    async def stop(self) -> int:
        """DELETE the session (the WHIP way to end it), then close; returns the DELETE's status."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession() as http:
            async with http.delete(self.location, headers=headers, ssl=self.ssl) as r:
                status = r.status
        await self.pc.close()
        return status
