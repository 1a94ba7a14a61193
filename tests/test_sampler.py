"""The sampler's rate and bounded queue, and the reconnect loop every source shares."""
import asyncio
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from configs import SamplerConfig, SourceConfig
from stream.frame import Frame
from stream.sampler import Sampler
from stream.sources import Source, SourceError, SourceFailed, open_source
from stream.sources.backoff import Backoff
from stream.sources.timeline import Timeline

pytestmark = pytest.mark.timeout(60)


async def drain(sampler: Sampler) -> list[Frame]:
    return [f async for f in sampler]


async def test_rate_on_stream_time():
    source = open_source("synth://?fps=10&speed=0&duration=10")
    async with Sampler(source, SamplerConfig(fps=2)) as sampler:
        frames = await drain(sampler)
    assert [f.pts for f in frames] == pytest.approx([i / 2 for i in range(21)])
    st = source.status
    assert (st.frames_decoded, st.frames_sampled, st.frames_dropped, st.state) == (101, 21, 0, "ended")


async def test_rate_that_does_not_divide_the_source_rate():
    # 2 fps out of 3 fps: the grid keeps the mean rate (no drift) though the spacing alternates.
    async with Sampler(open_source("synth://?fps=3&speed=0&duration=30"), SamplerConfig(fps=2)) as sampler:
        pts = [f.pts for f in await drain(sampler)]
    assert len(pts) == pytest.approx(61, abs=1)
    assert set(np.round(np.diff(pts), 3)) <= {0.333, 0.667}


async def test_slow_consumer_drops_the_oldest():
    source = open_source("synth://?fps=20&speed=1000&duration=5")  # live: 101 frames in a few ms
    async with Sampler(source, SamplerConfig(fps=20, queue_size=4)) as sampler:
        while source.status.state != "ended":  # the consumer takes nothing until the camera is done
            await asyncio.sleep(0.01)
        frames = await drain(sampler)
    assert [f.pts for f in frames] == pytest.approx([4.85, 4.9, 4.95, 5.0])  # the freshest frames
    st = source.status
    assert (st.frames_sampled, st.frames_dropped) == (101, 97)


async def test_memory_stays_flat_with_a_stalled_consumer():
    source = open_source("synth://?fps=30&speed=1000&duration=10&width=256&height=256")
    frame_bytes = 256 * 256 * 3
    tracemalloc.start()
    try:
        async with Sampler(source, SamplerConfig(fps=30, queue_size=8)) as sampler:
            while source.status.state != "ended":
                await asyncio.sleep(0.01)
            _, peak = tracemalloc.get_traced_memory()
            assert sampler.qsize() == 8
    finally:
        tracemalloc.stop()
    assert source.status.frames_sampled == 301 and source.status.frames_dropped == 293
    assert peak < 40 * frame_bytes  # 301 frames would be 59 MB; the queue holds 8, rendering a few more


async def test_unpaced_source_waits_for_a_slow_consumer():
    source = open_source("synth://?fps=4&speed=0&duration=5")
    async with Sampler(source, SamplerConfig(fps=4, queue_size=2)) as sampler:
        frames = []
        async for f in sampler:
            frames.append(f)
            await asyncio.sleep(0.01)
            assert sampler.qsize() <= 2
    assert len(frames) == 21 and source.status.frames_dropped == 0


class Flaky(Source):
    """Fails `failures` times in a row, then yields `n` frames whose own clock restarts at 0 each session."""

    def __init__(self, failures: int, n: int = 3, cfg: SourceConfig | None = None):
        super().__init__("flaky://", cfg or SourceConfig(backoff_initial=0.01, backoff_max=0.02))
        self.failures, self.n, self.sessions = failures, n, 0

    def _read(self, keep) -> Iterator[Frame]:
        self.sessions += 1
        if self.sessions <= self.failures:
            raise SourceError(f"flaky: failure {self.sessions}")
        for i in range(self.n):
            pts = self._decoded(i * 0.1, 0.0)
            if keep(pts):
                yield Frame(np.zeros((2, 2, 3), np.uint8), pts, 0.0)


class Late(Source):
    """A camera decoded behind real time: each frame's packet was read `lag` seconds before its decode."""

    restart_on_end = False

    def __init__(self, n: int, lag: float):
        super().__init__("late://", SourceConfig())
        self.n, self.lag = n, lag

    def _read(self, keep) -> Iterator[Frame]:
        for i in range(self.n):
            time.sleep(0.02)  # a camera's pace, faster
            pts = self._decoded(i * 0.1, time.monotonic())
            if keep(pts):
                yield Frame(np.zeros((2, 2, 3), np.uint8), pts, time.monotonic() - self.lag)


async def test_max_delay_bounds_the_wait_for_the_consumer_not_the_decode_lag():
    """A frame decoded late (within source.max_lag) and taken at once is delivered: dropping it would throw
    away work already done, and past capacity that work is what the cores are short of."""
    source = Late(n=10, lag=0.8)
    async with Sampler(source, SamplerConfig(fps=10, queue_size=8, max_delay=0.2)) as sampler:
        frames = await drain(sampler)
    assert len(frames) == 10 and source.status.frames_dropped == 0


async def test_reconnects_after_errors_and_clean_ends():
    source = Flaky(failures=2)
    frames = []
    async for f in source.frames():
        frames.append(f)
        if len(frames) == 9:  # three sessions' worth: each clean end reconnects too
            break
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert source.status.reconnects == 4 and source.status.state == "connected"
    assert source.status.last_error == "stream ended"


async def test_gives_up_after_max_retries():
    source = Flaky(failures=10, cfg=SourceConfig(backoff_initial=0.01, max_retries=3))
    with pytest.raises(SourceFailed, match="gave up after 3 retries: flaky: failure 4"):
        async for _ in source.frames():
            pass
    assert source.status.state == "failed" and source.sessions == 4 and source.status.reconnects == 3


async def test_a_session_that_worked_resets_the_count():
    # A failed first attempt and a failed retry, then a good session; a disconnect and a failed retry,
    # then a good session: never more than max_retries=2 failures in a row.
    source = Flaky(failures=2, cfg=SourceConfig(backoff_initial=0.01, max_retries=2))
    n = 0
    async for _ in source.frames():
        n += 1
        if n == 3:
            source.failures = source.sessions + 1
        if n == 6:
            break
    assert source.sessions == 5 and source.status.reconnects == 4


async def test_close_wakes_a_waiting_consumer():
    sampler = Sampler(open_source("synth://?fps=0.1")).start()  # next frame in 10 s
    assert (await sampler.get()).pts == 0.0
    waiter = asyncio.create_task(sampler.get())
    await asyncio.sleep(0.05)
    await sampler.close()
    assert await waiter is None and sampler.status.state == "ended"


def test_timeline_is_monotonic_across_sessions():
    tl = Timeline()
    tl.new_session()
    assert [tl.stamp(raw, arr) for raw, arr in [(None, 100.0), (5.0, 100.1), (5.1, 100.2)]] == pytest.approx([0, 0.1, 0.2])
    tl.new_session()  # the camera's clock restarts; 2 s of wall time passed in between
    assert [tl.stamp(raw, arr) for raw, arr in [(0.0, 102.2), (0.1, 102.3)]] == pytest.approx([2.2, 2.3])
    assert tl.stamp(0.05, 102.4) > 2.3  # a clock stepping back does not move stream time back
    tl.new_session()  # a restart with no wall time in between (a looping file) still leaves a frame's gap
    assert tl.stamp(0.0, 102.4) == pytest.approx(tl.last) and tl.last > 2.3


def test_timeline_counts_a_reconnect_gap_once():
    """A camera gone for 30 s: the first frames of its next session carry no timestamp, then FFmpeg's
    first RTCP report re-bases them on the camera's clock, which ran on meanwhile (+30 s)."""
    for follow in (False, True):
        tl = Timeline(follow_arrival=follow)
        stamps = [tl.stamp(i / 10, 100 + i / 10) for i in range(10)]
        tl.new_session()
        stamps += [tl.stamp(None, 130.9), tl.stamp(None, 131.0)]
        assert stamps[-2] == pytest.approx(30.9) and stamps[-1] < 31.2
    # the live one's next session: RTP times from 0, then re-based 30 s ahead at the first RTCP report
    tl.new_session()
    arrivals = [131.1 + i / 10 for i in range(10)]
    t = [tl.stamp(i / 10 + (30 if i >= 2 else 0), a) for i, a in enumerate(arrivals)]
    assert max(abs(x - (a - 100)) for x, a in zip(t, arrivals)) < 0.5 and tl.reanchors == 1


def test_live_timeline_follows_arrival_through_jumps_both_ways():
    tl = Timeline(follow_arrival=True)
    arrivals = [100 + i / 10 for i in range(60)]
    raws = [i / 10 for i in range(20)] + [i / 10 - 5 for i in range(20, 40)] + [i / 10 + 50 for i in range(40, 60)]
    t = [tl.stamp(r, a) for r, a in zip(raws, arrivals)]
    assert t == sorted(t) and len(set(t)) == len(t)
    assert max(abs(x - (a - 100)) for x, a in zip(t, arrivals)) < 0.5
    assert np.diff(t)[25:35] == pytest.approx(0.1)  # after the jump back it moves on at the frame rate
    assert tl.reanchors == 2
    # a source whose clock is the truth (a file decoded faster than real time) keeps it
    tl = Timeline()
    assert [tl.stamp(i / 10, 100.0) for i in range(5)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])


def test_backoff():
    b = Backoff(0.5, 3.0, 0.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
    jittered = Backoff(1.0, 1.0, 0.3)
    delays = [jittered.next() for _ in range(200)]
    assert all(0.7 <= d <= 1.0 for d in delays) and len(set(delays)) > 100
