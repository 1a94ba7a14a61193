"""Files (any container FFmpeg reads) and the synthetic camera as sources."""
import asyncio
import threading
import time

import av
import numpy as np
import pytest

from configs import SamplerConfig, SourceConfig
from stream.sampler import Sampler
from stream.sources import SourceFailed, open_source
from stream.sources.gate import DecodeGate
from stream.synth import SynthWorld

pytestmark = pytest.mark.timeout(60)

FPS, SECONDS = 10, 3


def write_clip(path, codec: str, crf: int = 18) -> SynthWorld:
    """Encode SECONDS of the synthetic camera at FPS; returns the world, the ground truth of every frame."""
    world = SynthWorld(7, width=64, height=64, noise=0.0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS, options={"crf": str(crf)} if codec == "libx264" else {"b": "2M"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(FPS * SECONDS):
            frame = av.VideoFrame.from_ndarray(world.frame_at(i / FPS), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return world


@pytest.fixture(params=[("clip.mp4", "libx264"), ("clip.webm", "libvpx"), ("clip.mkv", "libx265")])
def clip(request, tmp_path):
    name, codec = request.param
    path = tmp_path / name
    return path, write_clip(path, codec)


async def test_file_frames_match_the_source(clip):
    path, world = clip
    source = open_source(str(path))
    async with Sampler(source, SamplerConfig(fps=2)) as sampler:
        frames = [f async for f in sampler]
    assert [f.pts for f in frames] == pytest.approx([i / 2 for i in range(2 * SECONDS)])
    for f in frames:  # lossy, but RGB in the right order and at the right time
        err = np.abs(f.image.astype(int) - world.frame_at(f.pts).astype(int)).mean()
        assert err < 6, (f.pts, err)
    st = source.status
    assert (st.state, st.frames_decoded, st.frames_sampled, st.frames_dropped) == ("ended", FPS * SECONDS, 2 * SECONDS, 0)


async def test_skip_loop_filter(tmp_path):
    """Without the deblocking filter the frames are not the standard decode's, but close to it (and to the truth)."""
    path = tmp_path / "clip.mp4"
    world = write_clip(path, "libx264", crf=36)  # coarse enough that the filter has edges to smooth

    async def frames(skip: bool) -> list:
        async with Sampler(open_source(str(path), SourceConfig(skip_loop_filter=skip)), SamplerConfig(fps=FPS)) as s:
            return [f async for f in s]

    fast, full = await frames(True), await frames(False)
    assert [f.pts for f in fast] == [f.pts for f in full] and len(fast) == FPS * SECONDS
    diff = np.array([np.abs(a.image.astype(int) - b.image.astype(int)).mean() for a, b in zip(fast, full)])
    assert diff.max() > 0  # the option reached the decoder
    assert diff.mean() < 3, diff
    for f in fast:
        assert np.abs(f.image.astype(int) - world.frame_at(f.pts).astype(int)).mean() < 12


class RecordingGate:
    """A decode gate of one that records how many decodes held it at once."""

    def __init__(self):
        self.lock, self.count, self.holders, self.most = threading.Lock(), threading.Lock(), 0, 0

    def __enter__(self):
        self.lock.acquire()
        with self.count:
            self.holders += 1
            self.most = max(self.most, self.holders)

    def __exit__(self, *exc):
        with self.count:
            self.holders -= 1
        self.lock.release()


async def test_sources_sharing_a_decode_gate_decode_one_packet_at_a_time_and_lose_nothing(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, "libx264")
    gate = RecordingGate()

    async def frames(gated: bool) -> list:
        source = open_source(str(path))
        source.decode_gate = gate if gated else None
        async with Sampler(source, SamplerConfig(fps=FPS)) as sampler:
            return [f async for f in sampler]

    gated = await asyncio.gather(*(frames(True) for _ in range(3)))
    plain = await frames(False)
    assert gate.most == 1
    for got in gated:
        assert [f.pts for f in got] == [f.pts for f in plain] and len(got) == FPS * SECONDS
        assert all((a.image == b.image).all() for a, b in zip(got, plain))


@pytest.mark.parametrize("slots", [1, 3])
def test_decode_gate_lets_in_at_most_its_slots_in_the_order_they_came(slots):
    gate, lock = DecodeGate(slots), threading.Lock()
    order, inside, most = [], [0], [0]

    def decode(i):
        with gate:
            with lock:
                order.append(i)
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    for _ in range(slots):
        gate.__enter__()  # every slot taken: each thread that comes now waits
    threads = [threading.Thread(target=decode, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
        time.sleep(0.02)  # they come one after another
    for _ in range(slots):
        gate.__exit__()
    for t in threads:
        t.join()
    assert most[0] == slots
    # in turn: each thread enters before any that came after it was let in alongside the next slots
    assert all(order.index(i) < order.index(j) for i in range(9) for j in range(i + slots, 9)), order


def test_a_slot_freed_goes_to_the_thread_waiting_not_to_one_that_comes_later():
    """threading.Semaphore fails this: the releasing thread takes the slot back before the waiter it woke runs."""
    gate, got = DecodeGate(1), []

    def waiter():
        with gate:
            got.append("waiter")

    gate.__enter__()
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)  # the waiter waits
    gate.__exit__()
    with gate:  # a thread that comes later
        got.append("later")
    t.join()
    assert got == ["waiter", "later"]


async def test_hardware_decoding_decodes_or_says_it_is_not_there(tmp_path):
    """source.hwaccel: cuda decodes like the CPU where NVDEC is (the GPU machine), and where it is not, the
    source fails at once with an error that names the setting (no retries, no FFmpeg error per packet)."""
    path = tmp_path / "clip.mp4"
    world = write_clip(path, "libx264")
    source = open_source(str(path), SourceConfig(hwaccel="cuda"))
    try:
        async with Sampler(source, SamplerConfig(fps=2)) as sampler:
            frames = [f async for f in sampler]
    except SourceFailed as e:
        assert "source.hwaccel: cuda" in str(e) and "not available" in str(e)
        assert source.status.state == "failed" and source.status.reconnects == 0
        return
    assert len(frames) == 2 * SECONDS
    for f in frames:
        assert np.abs(f.image.astype(int) - world.frame_at(f.pts).astype(int)).mean() < 6


def test_hwaccel_names_are_checked():
    with pytest.raises(ValueError, match="source.hwaccel"):
        SourceConfig(hwaccel="nvdec")


async def test_loop(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, "libx264")
    source = open_source(f"file://{path}?loop=1")
    async with Sampler(source, SamplerConfig(fps=FPS)) as sampler:
        frames = [await sampler.get() for _ in range(FPS * SECONDS * 2 + 5)]
    pts = [f.pts for f in frames]
    assert np.diff(pts) == pytest.approx(1 / FPS)  # the loop's seam is one frame long, like any other
    assert (frames[0].image == frames[FPS * SECONDS].image).all()
    assert source.status.reconnects == 2


async def test_realtime_pacing(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, "libx264")
    source = open_source(f"file://{path}?realtime=true")
    assert source.live
    async with Sampler(source, SamplerConfig(fps=FPS)) as sampler:
        frames = [f async for f in sampler]
    # Paced: a frame is never delivered before its time (a lower bound, so no flakiness on a busy machine).
    assert frames[-1].arrival - frames[0].arrival >= frames[-1].pts - frames[0].pts - 0.01


async def test_missing_and_unreadable_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    for spec, message in [(str(tmp_path / "nope.mp4"), "No such file"), (str(junk), "junk.mp4: cannot open")]:
        source = open_source(spec)
        async with Sampler(source) as sampler:
            with pytest.raises(SourceFailed, match=message):
                await sampler.get()
        assert source.status.state == "failed" and source.status.reconnects == 0


async def test_synth_frames_are_the_world():
    source = open_source("synth://?seed=3&fps=4&speed=0&duration=20&width=96&height=64")
    world = SynthWorld(3, width=96, height=64)
    async with Sampler(source, SamplerConfig(fps=1)) as sampler:
        frames = [f async for f in sampler]
    assert [f.pts for f in frames] == pytest.approx(list(range(21)))
    assert all((f.image == world.frame_at(f.pts)).all() for f in frames)
    assert source.status.frames_decoded == 81  # counted, but only sampled frames were rendered


async def test_synth_is_paced_like_a_camera():
    source = open_source("synth://?fps=4&speed=20")
    assert source.live
    async with Sampler(source, SamplerConfig(fps=4)) as sampler:
        frames = [await asyncio.wait_for(sampler.get(), 10) for _ in range(10)]
    assert frames[-1].arrival - frames[0].arrival >= (frames[-1].pts - frames[0].pts) / 20 - 0.01


@pytest.mark.parametrize("spec", ["synth://?bogus=1", "synth://?seed=-1", "synth://?fps=0", "synth://?width=8",
                                  "file:///x.mp4?loop=maybe", "nope://x", "whip://cam"])
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        open_source(spec)
