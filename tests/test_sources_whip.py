"""WHIP ingest against real WebRTC publishers: aiortc (VP8, H.264) and headless Chromium."""
import asyncio
import shutil
import subprocess

import aiohttp
import pytest
from aiohttp import web
from whip_publisher import Publisher, loopback_ice  # noqa: F401  (a fixture)

from configs import SamplerConfig, SourceConfig, WhipConfig
from conftest import need
from stream.sampler import Sampler
from stream.sources import WhipServer, open_source

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("loopback_ice")]


@pytest.fixture
async def whip():
    server = WhipServer(WhipConfig(max_offer_bytes=4096))
    url = await server.serve()
    yield server, url
    await server.close()


async def take(sampler: Sampler, n: int) -> list:
    return [await asyncio.wait_for(sampler.get(), 30) for _ in range(n)]


def video_codec(sdp: str) -> str:
    """The codec of the first payload type of the m=video line of an SDP answer."""
    lines = sdp.splitlines()
    pt = next(l for l in lines if l.startswith("m=video")).split()[3]
    return next(l for l in lines if l.startswith(f"a=rtpmap:{pt} ")).split()[1].split("/")[0]


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_aiortc_publisher(whip, codec):
    server, url = whip
    source = open_source("whip://cam", whip=server)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        pub = await Publisher(f"{url}/cam", codec).start()
        assert video_codec(pub.answer) == codec
        frames = await take(sampler, 3)
        assert all(f.image.shape == (64, 64, 3) and f.image.dtype.name == "uint8" for f in frames)
        assert source.status.state == "connected"

        # DELETE ends the session; the source waits for the next publisher, and stream time carries on.
        assert await pub.stop() == 200
        while source.status.state != "reconnecting":
            await asyncio.sleep(0.05)
        pub2 = await Publisher(f"{url}/cam", codec, seed=1).start()
        frames += await take(sampler, 3)
        assert source.status.reconnects == 1
        assert source.status.frames_decoded >= source.status.frames_sampled >= 6
        await pub2.stop()
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)


async def test_frame_watchdog_and_a_publisher_that_resumes():
    """A publisher whose video stops while its peer connection (and RTCP) stays up: the frame watchdog
    ends the session within source.frame_timeout and says so; when the video resumes on the same
    connection, the source takes it up again and stream time carries on."""
    server = WhipServer(WhipConfig(), SourceConfig(frame_timeout=1.0))
    url = await server.serve()
    try:
        source = open_source("whip://cam", whip=server)
        async with Sampler(source, SamplerConfig(fps=5)) as sampler:
            pub = await Publisher(f"{url}/cam").start()
            before = await take(sampler, 2)
            pub.track.paused.set()
            await asyncio.wait_for(_until(lambda: source.status.state == "reconnecting"), 15)
            assert "frame watchdog" in source.status.last_error
            pub.track.paused.clear()
            await asyncio.wait_for(_until(lambda: source.status.state == "connected"), 15)
            while sampler.qsize():
                await sampler.get()
            after = await take(sampler, 2)
            await pub.stop()
        pts = [f.pts for f in before + after]
        assert pts == sorted(pts) and source.status.reconnects >= 1
    finally:
        await server.close()


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.05)


async def test_bad_requests_get_4xx_and_the_server_keeps_serving(whip):
    server, url = whip
    async with Sampler(open_source("whip://good", whip=server), SamplerConfig(fps=10)) as sampler:
        good = await Publisher(f"{url}/good").start()
        await take(sampler, 2)
        server.source("other")
        big_offer = "v=0\r\n" + "a=x\r\n" * 2000
        async with aiohttp.ClientSession() as http:
            for body, ctype, stream, status in [
                ("v=0\r\n", "text/plain", "other", 415),  # wrong content type
                ("this is not SDP", "application/sdp", "other", 400),
                ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "application/sdp", "other", 400),  # no video
                (big_offer, "application/sdp", "other", 413),
                ("v=0\r\n", "application/sdp", "unregistered", 404),
            ]:
                async with http.post(f"{url}/{stream}", data=body, headers={"Content-Type": ctype}) as r:
                    assert r.status == status, (body[:40], await r.text())
            async with http.delete(f"{url}/other/no-such-session") as r:
                assert r.status == 404
            async with http.patch(good.location, data="") as r:  # no trickle ICE here
                assert r.status == 405
        before = sampler.status.frames_decoded
        await take(sampler, 2)
        assert sampler.status.frames_decoded > before and sampler.status.state == "connected"
        await good.stop()


async def test_removed_stream_refuses_publishers(whip):
    server, url = whip
    source = server.source("cam")
    pub = await Publisher(f"{url}/cam").start()
    server.remove("cam")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/cam", data="v=0\r\n", headers={"Content-Type": "application/sdp"}) as r:
            assert r.status == 404
    assert source.status.state == "ended"
    assert server.source("cam") is not source  # registering again gives a fresh source
    await pub.pc.close()


async def test_bearer_token():
    server = WhipServer(WhipConfig(token="s3cret"))
    url = await server.serve()
    server.source("cam")
    try:
        async with aiohttp.ClientSession() as http:
            for name in ("cam", "nobody"):  # without the token, a registered name and an unknown one look alike
                async with http.post(f"{url}/{name}", data="v=0\r\n", headers={"Content-Type": "application/sdp"}) as r:
                    assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            pub = await Publisher(f"{url}/cam", token="s3cret").start()
            async with http.delete(pub.location) as r:  # nor can anyone else end the session
                assert r.status == 401
            assert await pub.stop() == 200
    finally:
        await server.close()


async def test_eight_concurrent_streams(whip):
    server, url = whip
    samplers = [Sampler(open_source(f"whip://cam{i}", whip=server), SamplerConfig(fps=5)).start() for i in range(8)]
    pubs = await asyncio.gather(*(Publisher(f"{url}/cam{i}", seed=i).start() for i in range(8)))
    got = await asyncio.gather(*(take(s, 2) for s in samplers))
    # Each stream got its own camera: seeds differ, so the first frames of any two streams differ.
    firsts = [frames[0].image for frames in got]
    assert all((firsts[i] != firsts[j]).any() for i in range(8) for j in range(i))
    assert all(s.status.state == "connected" for s in samplers)
    await asyncio.gather(*(p.stop() for p in pubs))
    await asyncio.gather(*(s.close() for s in samplers))


PAGE = """<!doctype html><script>
(async () => {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}});
  const pc = new RTCPeerConnection();
  pc.addTransceiver(media.getVideoTracks()[0], {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {  // no trickle ICE: send the offer with every candidate in it
    if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const r = await fetch("/whip/browser", {method: "POST", headers: {"Content-Type": "application/sdp"},
                                           body: pc.localDescription.sdp});
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
})();
</script>"""


async def test_chromium_publisher(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "Debian's chromium is not installed")
    server = WhipServer()
    root = web.Application()

    async def page(_):
        return web.Response(text=PAGE, content_type="text/html")

    root.router.add_get("/", page)
    root.add_subapp("/whip", server.app())  # mounted the way the gateway mounts it
    runner = web.AppRunner(root)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         f"--user-data-dir={tmp_path}", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with Sampler(open_source("whip://browser", whip=server), SamplerConfig(fps=5)) as sampler:
            frames = await take(sampler, 3)
        assert frames[0].image.shape == (240, 320, 3)
        assert len({f.image.tobytes() for f in frames}) == 3  # Chromium's fake camera moves
    finally:
        browser.kill()
        browser.wait()
        await server.close()
        await runner.cleanup()
