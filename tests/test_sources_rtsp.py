"""RTSP ingest against a real server (GStreamer's gst-rtsp-server, run by the system python) on 127.0.0.1."""
import asyncio
import contextlib
import datetime
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from configs import SamplerConfig, SourceConfig
from conftest import need
from stream.sampler import Sampler
from stream.sources import SourceFailed, open_source

pytestmark = pytest.mark.timeout(120)

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
# Short timeouts and backoff so that failures show up quickly; nothing here asserts on time.
FAST = SourceConfig(open_timeout=2.0, read_timeout=2.0, backoff_initial=0.2, backoff_max=1.0)


def have_gst_rtsp_server() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    def __init__(self, port: int, tls_pem: Path | None = None):
        self.port, self.tls_pem = port, tls_pem
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        args = [SYSTEM_PYTHON, str(SERVER), str(self.port)] + ([str(self.tls_pem)] if self.tls_pem else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "rtsp_server.py did not start"
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
        self.proc.kill()
        self.proc.wait()

    def url(self, mount: str) -> str:
        return f"{'rtsps' if self.tls_pem else 'rtsp'}://127.0.0.1:{self.port}/{mount}"


@pytest.fixture(scope="module")
def server():
    need(have_gst_rtsp_server(), "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 for /usr/bin/python3)")
    s = RtspServer(free_port()).start()
    yield s
    s.kill()


@pytest.fixture
def own_server():
    """A server this test may kill, stop and restart."""
    need(have_gst_rtsp_server(), "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 for /usr/bin/python3)")
    s = RtspServer(free_port()).start()
    yield s
    s.kill()


def self_signed_pem(path: Path) -> Path:
    """A certificate and its key, as a camera that makes its own would have."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


async def take(sampler: Sampler, n: int) -> list:
    return [await asyncio.wait_for(sampler.get(), 60) for _ in range(n)]


async def wait_until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mount,transport", [("h264", "tcp"), ("h264", "udp"), ("h265", "tcp")])
async def test_read(server, mount, transport):
    source = open_source(server.url(mount), FAST, rtsp_transport=transport)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        frames = await take(sampler, 4)
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype.name == "uint8" for f in frames)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == 4
    # 15 fps sampled at 5: about every third frame is converted, the rest only decoded.
    assert source.status.frames_decoded > source.status.frames_sampled >= 4
    assert source.status.reconnects == 0 and source.status.last_error is None


async def test_read_rtsps(tmp_path):
    """RTSP over TLS; FFmpeg does not verify the certificate by default, as cameras sign their own."""
    need(have_gst_rtsp_server(), "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 for /usr/bin/python3)")
    server = RtspServer(free_port(), self_signed_pem(tmp_path / "camera.pem")).start()
    try:
        source = open_source(server.url("h264"), FAST)
        async with Sampler(source, SamplerConfig(fps=5)) as sampler:
            frames = await take(sampler, 2)
        assert frames[0].image.shape == (240, 320, 3) and source.status.spec.startswith("rtsps://")
    finally:
        server.kill()


async def test_server_killed_and_restarted(own_server):
    source = open_source(own_server.url("h264"), FAST)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        before = await take(sampler, 3)
        own_server.kill()
        await wait_until(lambda: source.status.state == "reconnecting")
        own_server.start()
        await wait_until(lambda: source.status.state == "connected")
        while sampler.qsize():  # frames decoded before the kill
            await sampler.get()
        after = await take(sampler, 3)
    assert source.status.reconnects >= 1 and source.status.last_error
    pts = [f.pts for f in before + after]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)


async def test_stalled_server_times_out_then_reconnects(own_server):
    """SIGSTOP freezes the server mid-stream: its sockets stay open (the kernel even accepts new
    connections) but nothing comes back, so only the read and open timeouts can notice."""
    source = open_source(own_server.url("h264"), FAST)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        await take(sampler, 2)
        os.kill(own_server.proc.pid, signal.SIGSTOP)
        await wait_until(lambda: source.status.state == "reconnecting")
        assert "frame watchdog" in source.status.last_error
        await wait_until(lambda: "open timeout" in (source.status.last_error or ""))  # reconnecting into the stall
        os.kill(own_server.proc.pid, signal.SIGCONT)
        await wait_until(lambda: source.status.state == "connected")
        while sampler.qsize():
            await sampler.get()
        await take(sampler, 2)
    assert source.status.reconnects >= 2


class Collector:
    """Takes every frame the sampler gives (so that none is dropped for a slow consumer) on a task."""

    def __init__(self, sampler: Sampler):
        self.frames = []
        self.task = asyncio.create_task(self._run(sampler))

    async def _run(self, sampler):
        async for frame in sampler:
            self.frames.append(frame)

    async def more(self, n: int) -> None:
        want = len(self.frames) + n
        await asyncio.wait_for(wait_until(lambda: len(self.frames) >= want), 60)

    def off_arrival(self) -> float:
        """The largest gap between stream time and arrival time, both from the first frame."""
        t0, a0 = self.frames[0].pts, self.frames[0].arrival
        return max(abs((f.pts - t0) - (f.arrival - a0)) for f in self.frames)


async def test_stream_time_follows_arrival_across_kill_restart_and_stalls(own_server):
    """A camera lost, back, frozen (everything stops) and stalled (media stops, RTCP goes on): stream
    time stays monotonic and within 1 s of arrival time, each gap counted once."""
    source = open_source(own_server.url("h264"), FAST, frame_timeout=1.0)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        got = Collector(sampler)
        await got.more(5)
        own_server.kill()
        await asyncio.sleep(2.0)
        own_server.start()
        await got.more(5)
        os.kill(own_server.proc.pid, signal.SIGSTOP)  # frozen: no media, no RTCP
        await wait_until(lambda: "frame watchdog" in (source.status.last_error or ""))
        await asyncio.sleep(2.0)
        os.kill(own_server.proc.pid, signal.SIGCONT)
        await wait_until(lambda: source.status.state == "connected")
        await got.more(5)
        source.status.last_error = None
        os.kill(own_server.proc.pid, signal.SIGUSR1)  # media off, the session and its RTCP go on
        await wait_until(lambda: "frame watchdog" in (source.status.last_error or ""))
        await asyncio.sleep(2.0)
        os.kill(own_server.proc.pid, signal.SIGUSR1)
        await wait_until(lambda: source.status.state == "connected")
        await got.more(5)
    pts = [f.pts for f in got.frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert source.status.reconnects >= 3
    assert got.off_arrival() < 1.0, [(round(f.pts, 2), round(f.arrival - got.frames[0].arrival, 2)) for f in got.frames]


async def test_timestamps_jumping_back_keep_sampling(own_server):
    """The camera's clock steps 3 s back mid-session: frames go on being sampled at the sampler's rate
    (not held back until stream time catches up), stream time stays monotonic and near arrival time."""
    source = open_source(own_server.url("h264"), FAST)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        got = Collector(sampler)
        await got.more(25)  # > 3 s of stream: its timestamps can go 3 s back
        os.kill(own_server.proc.pid, signal.SIGUSR2)
        jumped = time.monotonic()
        await asyncio.sleep(3.0)
        after = [f for f in got.frames if f.arrival > jumped + 0.5]
    assert len(after) >= 8, f"{len(after)} frames sampled in the 2.5 s after the jump (5 fps wanted)"
    assert source.timeline.reanchors >= 1 and source.status.reconnects == 0
    pts = [f.pts for f in got.frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert got.off_arrival() < 1.0


async def test_frame_watchdog_fires_within_its_limit(own_server):
    """Media stops while the session and its RTCP reports go on (FFmpeg's socket timeout never fires):
    the watchdog ends the session within source.frame_timeout, says so, and the source recovers."""
    source = open_source(own_server.url("h264"), FAST, frame_timeout=1.5, read_timeout=10.0)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        got = Collector(sampler)
        await got.more(3)
        os.kill(own_server.proc.pid, signal.SIGUSR1)
        stopped = time.monotonic()
        await asyncio.wait_for(wait_until(lambda: source.status.state == "reconnecting"), 30)
        noticed = time.monotonic() - stopped
        assert "stalled: no video frame for 1.5 s" in source.status.last_error
        assert "frame watchdog" in source.status.last_error
        assert noticed < 1.5 + 1.0, f"noticed after {noticed:.1f} s"
        os.kill(own_server.proc.pid, signal.SIGUSR1)
        await asyncio.wait_for(wait_until(lambda: source.status.state == "connected"), 30)
        await got.more(3)


@contextlib.asynccontextmanager
async def tcp_server(handle):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def run_until_failed(spec: str, **overrides) -> str:
    source = open_source(spec, FAST, max_retries=1, **overrides)
    async with Sampler(source) as sampler:
        with pytest.raises(SourceFailed) as e:
            await asyncio.wait_for(sampler.get(), 60)
    assert source.status.state == "failed" and source.status.reconnects == 1
    return str(e.value)


async def test_refused_port():
    assert "Connection refused" in await run_until_failed(f"rtsp://127.0.0.1:{free_port()}/x")


async def test_accepting_server_that_never_answers():
    held = []

    async def hold(reader, writer):
        held.append(writer)  # keep the connection open and say nothing

    async with tcp_server(hold) as port:
        assert "open timeout" in await run_until_failed(f"rtsp://127.0.0.1:{port}/x")


async def test_non_rtsp_server():
    async def http(reader, writer):
        await reader.read(1000)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with tcp_server(http) as port:
        assert "does not speak RTSP" in await run_until_failed(f"rtsp://127.0.0.1:{port}/x")


async def test_password_is_masked():
    message = await run_until_failed(f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/x")
    assert "hunter2" not in message and "admin:***@" in message


@pytest.mark.parametrize("url", ["rtsp://", "rtsp://127.0.0.1:99999/x", "rtsp://[::1/x", "rtsp://:554/x", "rtps://cam/x"])
def test_malformed_url(url):
    with pytest.raises(ValueError, match="malformed|unsupported"):
        open_source(url)
