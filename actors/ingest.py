"""One stream's ingest (its source, its sampler, and the loop that hands sampled frames to an encoder), and
the batcher through which the many streams of one ingest worker share their calls to an encoder."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import numpy as np

from configs import Config
from stream.sampler import Sampler
from stream.sources import Source, open_source


class EncoderTarget(Protocol):
    """Where frames go: the encoder actor (through its handle) or, in tests, an EncoderWorker."""

    async def attach(self, stream_id: str) -> float | None: ...  # EncoderWorker.add_stream

    async def push(self, stream_id: str, image: np.ndarray, pts: float, arrival: float) -> str | None: ...


class Ingest:
    """Pulls frames from the sampler and pushes each to the current target, one at a time: while the
    encoder is busy the sampler's queue drops the oldest frames, so a slow encoder never backs up into
    the camera. A target that fails or does not answer is retried after `retry_delay` (frames meanwhile
    are lost, not queued); one that says "unknown stream" (restarted, or a new one after a move) is
    attached first, which restores the stream from its snapshot."""

    def __init__(self, stream_id: str, spec: str, cfg: Config, source: Source | None = None,
                 retry_delay: float = 0.5):
        self.stream_id, self.spec, self.cfg, self.retry_delay = stream_id, spec, cfg, retry_delay
        self.source = source or open_source(spec, cfg.source)
        self.source.size = cfg.vision.frame_size()  # frames leave this process at the encoder's input size
        self.sampler = Sampler(self.source, cfg.sampler)
        self.target: EncoderTarget | None = None
        self.frames_sent = 0
        self.push_failures = 0
        self._attached = False
        self._shift = 0.0  # added to stream time so that it follows what the encoder has (a restarted source starts at 0)
        self._task: asyncio.Task | None = None

    def retarget(self, target: EncoderTarget) -> None:
        """Send frames to `target` from the next frame on (the stream was moved to another encoder)."""
        if target is not self.target:
            self.target, self._attached = target, False

    def start(self) -> None:
        if self._task is None:
            self.sampler.start()
            self._task = asyncio.create_task(self._run(), name=f"ingest {self.stream_id}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sampler.close()

    def status(self) -> dict:
        return {**self.source.status.as_dict(), "frames_sent": self.frames_sent, "push_failures": self.push_failures}

    async def _run(self) -> None:
        # a frame is None once the source ended; a source that gave up raises SourceFailed, and its status says why
        with contextlib.suppress(Exception):
            while (frame := await self.sampler.get()) is not None:
                # Frame.arrival is this machine's monotonic clock; the encoder may run on another machine
                arrival = time.time() - (time.monotonic() - frame.arrival)
                await self._send(frame.image, frame.pts, arrival)

    async def _send(self, image: np.ndarray, pts: float, arrival: float) -> None:
        while self.target is not None:
            target = self.target
            try:
                if not self._attached:
                    last = await target.attach(self.stream_id)
                    self._attached = True
                    if last is not None and pts + self._shift <= last:
                        self._shift = last - pts + 1.0 / self.cfg.sampler.fps
                refused = await target.push(self.stream_id, image, pts + self._shift, arrival)
            except asyncio.CancelledError:
                raise
            except Exception:  # the encoder died, is restarting, moved, or timed out: drop this frame
                self.push_failures += 1
                self._attached = False
                await asyncio.sleep(self.retry_delay)
                return
            if refused == "unknown stream":
                self._attached = False
                continue
            if refused is None:
                self.frames_sent += 1
            return


SendBatch = Callable[[list[str], list[np.ndarray], list[float], list[float]], Awaitable[list[str | None]]]


class FrameBatcher:
    """An encoder as the many streams of one process see it: `push` has the EncoderTarget's form (one frame,
    waits for its answer), and while one call to the encoder is in flight the frames of every stream gather
    for the next, which carries them all. At most one call per encoder is in flight; the batch grows with
    the load, so a busy encoder gets few large calls instead of one per frame. The frames travel as the
    arrays they are (no stacking: Ray writes each array's buffer once, and the encoder reads it in place)."""

    def __init__(self, send: SendBatch):
        self.send = send
        self.calls = 0
        self._pending: list[tuple[str, np.ndarray, float, float, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def push(self, stream_id: str, image: np.ndarray, pts: float, arrival: float) -> str | None:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((stream_id, image, pts, arrival, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                refused = await self.send(*(list(col) for col in zip(*(item[:4] for item in batch))))
                self.calls += 1
            except Exception as e:  # every frame of the call failed alike; each stream's Ingest retries
                refused = [e] * len(batch)
            for item, r in zip(batch, refused):
                fut = item[4]
                if fut.done():  # its Ingest was closed meanwhile
                    continue
                if isinstance(r, Exception):
                    fut.set_exception(r)
                else:
                    fut.set_result(r)
