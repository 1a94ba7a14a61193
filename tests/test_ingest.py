"""Ingest without Ray: the batching at both ends of the call to an encoder, overload that drops fairly and
is counted, frames reduced at the source, and a camera read behind real time catching up by its keyframes."""
import asyncio
import statistics
import time

import numpy as np
import pytest

from actors.batching import EncoderIntake, FrameBatcher
from actors.ingest import Ingest
from configs import SamplerConfig, load_config
from stream.sampler import Sampler
from stream.sources import open_source
from stream.sources.av_source import Lag
from test_sources_rtsp import FAST, server  # noqa: F401  (a fixture: the RTSP server of the module)

pytestmark = pytest.mark.timeout(120)


class Encoder:
    """The encoder actor's intake (EncoderIntake) over passes that take a fixed time whatever their size,
    reached through a FrameBatcher as an ingest worker's streams reach it: an Ingest target."""

    def __init__(self, seconds_per_pass: float, max_batch: int = 64):
        self.seconds_per_pass = seconds_per_pass
        self.passes: list[list[str]] = []
        self.intake = EncoderIntake(self._pass, max_batch)
        self.batcher = FrameBatcher(lambda ids, images, pts, arrivals: self.intake.submit(list(zip(ids, images, pts, arrivals))))

    async def attach(self, stream_id):
        return None

    async def push(self, stream_id, image, pts, arrival):
        return await self.batcher.push(stream_id, image, pts, arrival)

    async def _pass(self, items):
        self.passes.append([item[0] for item in items])
        await asyncio.sleep(self.seconds_per_pass)
        return {item[0]: None for item in items}


async def test_batcher_sends_what_was_pushed_in_one_turn_in_one_call():
    release = asyncio.Event()
    calls = []

    async def send(ids, images, pts, arrivals):
        calls.append(ids)
        await release.wait()
        return ["unknown stream" if sid == "b" else None for sid in ids]

    batcher = FrameBatcher(send)
    first = asyncio.create_task(batcher.push("a", None, 0.0, 0.0))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.push(sid, None, 0.0, 0.0)) for sid in ("b", "c", "d")]
    await asyncio.sleep(0.05)
    assert calls == [["a"], ["b", "c", "d"]]  # pushed in one turn: one call; calls do not wait for each other
    release.set()
    assert await first is None
    assert [await t for t in rest] == ["unknown stream", None, None]  # each frame gets its own answer
    assert batcher.calls == 2


async def test_batcher_holds_a_call_open_for_batch_wait_seconds():
    calls = []

    async def send(ids, images, pts, arrivals):
        calls.append(ids)
        return [None] * len(ids)

    batcher = FrameBatcher(send, wait=0.2)
    first = asyncio.create_task(batcher.push("a", None, 0.0, 0.0))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(batcher.push("b", None, 0.0, 0.0))
    await asyncio.sleep(0.05)
    assert calls == [] and not first.done()  # held for the other streams' frames
    await asyncio.gather(first, second)
    assert calls == [["a", "b"]]
    await batcher.push("c", None, 0.0, 0.0)  # after the flush: a call of its own
    assert calls == [["a", "b"], ["c"]]


async def test_intake_serves_streams_in_turn_when_they_outnumber_a_pass():
    encoder = Encoder(seconds_per_pass=0.01, max_batch=2)
    await asyncio.gather(*(encoder.intake.submit([(sid, None, float(k), 0.0) for k in range(3)]) for sid in "abcde"))
    assert len(encoder.passes) == 8 and all(len(p) <= 2 for p in encoder.passes[:-1])
    for sid in "abcde":  # 15 frames in passes of 2: each stream served within every 3 passes
        served = [i for i, p in enumerate(encoder.passes) if sid in p]
        assert len(served) == 3 and max(b - a for a, b in zip([-1] + served, served)) <= 3, (sid, encoder.passes)


async def test_batcher_fails_every_frame_of_a_failed_call():
    async def send(ids, images, pts, arrivals):
        raise TimeoutError("encoder gone")

    batcher = FrameBatcher(send)
    results = await asyncio.gather(*(batcher.push(sid, None, 0.0, 0.0) for sid in "xyz"), return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in results)


async def test_overload_drops_fairly_counts_it_and_keeps_the_encoder_at_full_rate():
    """Four cameras sampled at 4 fps (16 frames/s) into an encoder that runs 2 passes a second: every pass
    takes a frame of every stream, the samplers drop the rest (counted), and all streams lose alike."""
    cfg = load_config(overrides={"sampler": {"fps": 4.0}})
    encoder = Encoder(seconds_per_pass=0.5)
    ingests = [Ingest(f"s{i}", f"synth://?seed={i}&fps=8&speed=1", cfg) for i in range(4)]
    for ingest in ingests:
        ingest.retarget(encoder)
        ingest.start()
    await asyncio.sleep(8.0)
    passes = list(encoder.passes)
    for ingest in ingests:
        await ingest.close()
    sent = [ingest.frames_sent for ingest in ingests]
    dropped = [ingest.source.status.frames_dropped for ingest in ingests]
    assert max(sent) - min(sent) <= 2, sent  # fair: each pass takes one frame of every stream waiting
    assert min(dropped) > 0 and max(dropped) - min(dropped) <= 0.2 * max(dropped) + 3, dropped  # counted, alike
    for ingest in ingests:  # every sampled frame is accounted for: sent, dropped, or still queued or in flight
        st = ingest.source.status
        assert st.frames_sampled - st.frames_dropped - ingest.frames_sent <= cfg.sampler.queue_size + 2
    steady = passes[2:]  # past start-up every pass is full: the encoder never waits for frames
    assert steady and sum(len(p) == 4 for p in steady) >= 0.9 * len(steady), passes


async def test_frames_that_waited_past_max_delay_are_dropped_not_delivered():
    source = open_source("synth://?fps=20&speed=1000&duration=2")  # live: 41 frames in a few ms
    async with Sampler(source, SamplerConfig(fps=20, queue_size=8, max_delay=0.2)) as sampler:
        while source.status.state != "ended":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the consumer stalls past max_delay
        frames = [f async for f in sampler]
    assert frames == []  # stale frames are never handed out ...
    st = source.status
    assert (st.frames_sampled, st.frames_dropped) == (41, 41)  # ... and every one is counted


def decodes(lag: Lag, camera_time: float, now: float, keyframe: bool) -> bool:
    """A packet read and decoded at once: whether `lag` skips it."""
    return not lag.skip(camera_time, lag.read(camera_time, now), 0.0, keyframe)


def test_lag_skips_to_keyframes_while_behind_and_resumes_once_caught_up():
    lag = Lag(limit=1.0)
    # on time: 15 fps, a keyframe each second
    assert all(decodes(lag, k / 15, 100 + k / 15, k % 15 == 0) for k in range(30))
    # the reader falls behind: the camera's clock advances 10 frames per 15 of wall time
    decisions = [not decodes(lag, 2 + k / 15, 102 + 1.5 * k / 15, k % 15 == 0) for k in range(60)]
    first = decisions.index(True)
    assert 0 < first < 60 and lag.lag > 1.0
    assert all(d == (k % 15 != 0) for k, d in enumerate(decisions) if k >= first)  # keyframes only
    # catching up: packets come faster than real time (the backlog read without decoding)
    t, now = 2 + 60 / 15, 102 + 1.5 * 60 / 15
    for k in range(1, 90):
        decodes(lag, t + k / 15, now + k / 60, k % 15 == 0)
        if not lag.skipping:
            break
    assert not lag.skipping and k % 15 == 0, "decodes every frame again from a keyframe once caught up"
    assert lag.lag < 0.25
    assert decodes(lag, t + (k + 1) / 15, now + k / 60 + 1 / 15, False)


def test_lag_thins_a_stream_of_keyframes_only():
    lag = Lag(limit=1.0)
    decodes(lag, 0.0, 0.0, True)
    decisions = [not decodes(lag, k / 15, 1.5 * k / 15, True) for k in range(1, 90)]  # all-intra, read too slowly
    decoded = [k for k, d in zip(range(1, 90), decisions) if not d]
    assert lag.skipping and len(decoded) < 40
    assert all(b - a >= 15 for a, b in zip(decoded, decoded[1:]) if a > 45)  # one a second while behind


def test_lag_takes_a_step_in_the_camera_clock_as_its_new_baseline():
    lag = Lag(limit=1.0)
    for k in range(15):
        decodes(lag, k / 15, k / 15, k % 15 == 0)
    # the camera's clock steps back 5 s; frames then come in real time: no backlog, nothing to skip
    assert all(decodes(lag, k / 15 - 5, k / 15, k % 15 == 0) for k in range(15, 75))
    assert lag.lag < 0.01


def test_lag_counts_the_wait_for_the_decoder_and_a_backlog_left_while_away():
    # read on time, decoded 1.5 s later (a burst that waited for the decode gate): behind
    lag = Lag(limit=1.0)
    behind = [lag.read(k / 15, k / 15) for k in range(15)]
    assert lag.skip(14 / 15, behind[-1], 1.5, False)
    # at the next keyframe, read on time: it is decoded and so are the packets after it, though the wait
    # for the gate (the same for every stream) is not over: the stream has caught up with its camera
    assert not lag.skip(1.0, lag.read(1.0, 1.0), 0.6, True) and not lag.skipping
    # the thread was away decoding for 2 s; the packets the camera sent meanwhile waited in its socket and
    # are read at once on its return: a backlog to skip, not a step in the camera's clock
    lag = Lag(limit=1.0)
    assert all(decodes(lag, k / 15, k / 15, k % 15 == 0) for k in range(15))
    behind = lag.read(16 / 15, 3.0, away=2.0)
    assert behind > 1.8 and lag.skip(16 / 15, behind, 0.0, False)


async def test_rtsp_frames_are_reduced_at_the_source_to_the_size_asked(server):
    """The camera's own size goes to `resize` (Config.frame_size), and the frame comes out at its answer."""
    source = open_source(server.url("h264"), FAST)  # 320x240 on the wire
    source.resize = lambda width, height: (width // 5, height // 5)
    async with Sampler(source, SamplerConfig(fps=5)) as sampler:
        frame = await sampler.get()
    assert frame.image.shape == (48, 64, 3) and frame.image.dtype.name == "uint8"


async def test_rtsp_camera_read_behind_real_time_catches_up_on_keyframes(server):
    """Decoding slower than the camera sends (a keep that takes 0.15 s a frame: under 7 of its 15 fps):
    the source skips to keyframes, counts what it skipped, and its frames stay near real time."""
    source = open_source(server.url("h264"), FAST, max_lag=1.0)
    seen = []

    def slow_keep(pts):
        time.sleep(0.15)
        seen.append((time.monotonic(), pts))
        return True

    async def read():
        async for _ in source.frames(keep=slow_keep):
            if len(seen) > 60:
                break

    await asyncio.wait_for(read(), 60)
    source.close()
    st = source.status
    assert st.frames_skipped > 0
    (w0, p0), (w1, p1) = seen[0], seen[-1]
    # without skipping, 60 frames at 0.15 s would be 9 s of wall time for 4 s of stream time
    assert (w1 - w0) - (p1 - p0) < 3.0, (w1 - w0, p1 - p0)


async def test_rtsp_packets_are_decoded_in_bursts_and_frames_keep_the_time_they_came_in(server):
    """source.decode_batch 0.4 s: every frame is decoded and delivered, a burst's frames together, each with
    the time its packet was read (so the wait shows as latency); decode_batch 0: each frame as it comes."""
    async def delays(batch: float):
        source = open_source(server.url("h264"), FAST, decode_batch=batch)
        frames, waited = [], []
        async with Sampler(source, SamplerConfig(fps=15)) as sampler:  # the camera's own rate: every frame
            while len(frames) < 45:
                frames.append(await sampler.get())
                waited.append(time.monotonic() - frames[-1].arrival)
        st = source.status
        assert st.frames_skipped == st.frames_dropped == 0
        assert np.diff([f.pts for f in frames]).max() < 0.1  # no frame missing (15 fps)
        return waited

    batched, plain = await delays(0.4), await delays(0.0)
    assert max(batched) > 0.25  # a burst's first frame waited for the rest of it
    assert statistics.median(plain) < 0.1 < statistics.median(batched), (plain, batched)


def test_frame_size_is_the_profiles():
    assert load_config().frame_size(1280, 720) == (64, 64)  # the trained tower's square input
    vlm = load_config("vlm", {"model": {"vlm": "some/vlm", "max_pixels": 448 * 448}})
    w, h = vlm.frame_size(1280, 720)
    assert w * h <= 448 * 448 and abs(w / h - 16 / 9) < 0.01  # the VLM's processor keeps the aspect
    assert vlm.frame_size(320, 240) == (320, 240)  # never enlarged


async def test_a_source_that_ends_delivers_its_last_frames():
    cfg = load_config()
    encoder = Encoder(seconds_per_pass=0.05)
    ingest = Ingest("end", "synth://?fps=4&speed=0&duration=10", cfg)  # not live: nothing may be dropped
    ingest.retarget(encoder)
    ingest.start()
    await asyncio.wait_for(ingest._task, 60)
    assert ingest.frames_sent == ingest.source.status.frames_sampled == 21
    await ingest.close()
