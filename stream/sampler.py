"""Frames from a source at a target rate, through a bounded queue that drops the oldest when the consumer
is slow; memory stays flat however slow the consumer."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from configs import SamplerConfig
from stream.frame import Frame
from stream.sources.source import Source, SourceFailed


class Sampler:
    """Runs `source` in a task of its own and keeps at most `queue_size` sampled frames for the consumer.

        async with Sampler(source, SamplerConfig(fps=2)) as sampler:
            async for frame in sampler:
                ...

    The rate is chosen on stream time before a frame is converted to RGB, so frames between samples cost
    only their decode. A live source never waits for the consumer: when the queue is full its oldest
    frame is dropped, and a frame that waited longer than `max_delay` in the queue is dropped when it comes
    up (both counted in status.frames_dropped). Past capacity, then, the consumer still gets frames at its
    own full rate, each stream's freshest, and no frame it takes waited for it longer than `max_delay`;
    streams that share one consumer taking a frame of each in turn (the encoder's batches) lose frames
    alike. How late a frame was decoded is the source's to bound (source.max_lag), not the queue's: a frame
    decoded late but taken at once is not stale work to throw away. A source that is not live (an unpaced
    file) waits for the consumer instead.
    """

    def __init__(self, source: Source, cfg: SamplerConfig | None = None):
        cfg = cfg or SamplerConfig()
        self.source, self.period, self.size, self.max_delay = source, 1.0 / cfg.fps, cfg.queue_size, cfg.max_delay
        self._queue: deque[tuple[Frame, float]] = deque()  # (frame, when it was queued)
        self._changed = asyncio.Condition()
        self._next_due = float("-inf")
        self._done = False
        self._error: Exception | None = None
        self._task: asyncio.Task | None = None

    @property
    def status(self):
        return self.source.status

    def start(self) -> Sampler:
        self._task = asyncio.create_task(self._pump(), name=f"sampler {self.status.spec}")
        return self

    async def close(self) -> None:
        self.source.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> Sampler:
        return self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def get(self) -> Frame | None:
        """The oldest queued frame; None once the source has ended. Raises SourceFailed if it gave up."""
        async with self._changed:
            while True:
                await self._changed.wait_for(lambda: self._queue or self._done)
                if not self._queue:
                    break
                frame, queued = self._queue.popleft()
                self._changed.notify_all()
                if self.source.live and time.monotonic() - queued > self.max_delay:
                    self.status.frames_dropped += 1  # stale: the consumer fell behind; a fresher one follows
                    continue
                return frame
        if self._error is not None:
            raise self._error
        return None

    def __aiter__(self):
        return self

    async def __anext__(self) -> Frame:
        frame = await self.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    def qsize(self) -> int:
        return len(self._queue)

    def _due(self, pts: float) -> bool:
        # Called on the source's decode thread for every frame; the 1 ms slack absorbs rounding of pts.
        if pts < self._next_due - 1e-3:
            return False
        # Keep the grid (no drift for a source whose rate is not a multiple of ours); after a gap (a
        # reconnect) start a fresh grid at this frame.
        self._next_due = self._next_due + self.period if pts < self._next_due + self.period else pts + self.period
        return True

    async def _pump(self) -> None:
        st = self.status
        try:
            async with contextlib.aclosing(self.source.frames(keep=self._due)) as frames:
                async for frame in frames:
                    async with self._changed:
                        if not self.source.live:
                            await self._changed.wait_for(lambda: len(self._queue) < self.size)
                        elif len(self._queue) >= self.size:
                            self._queue.popleft()
                            st.frames_dropped += 1
                        self._queue.append((frame, time.monotonic()))
                        st.frames_sampled += 1
                        self._changed.notify_all()
        except Exception as e:  # SourceFailed, or a bug: either way the consumer must hear of it, not see an end
            self._error = e
            if not isinstance(e, SourceFailed):
                st.state, st.last_error = "failed", repr(e)
        finally:
            self._done = True
            async with self._changed:  # wake a consumer waiting in get()
                self._changed.notify_all()
