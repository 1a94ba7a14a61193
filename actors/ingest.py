"""One stream's ingest: its source, its sampler, and the loop that hands sampled frames to an encoder."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import numpy as np

from configs import Config
from stream.sampler import Sampler
from stream.sources import Source, open_source


class EncoderTarget(Protocol):
    """Where frames go: the encoder actor (through its handle) or, in tests, an EncoderWorker."""

    async def attach(self, stream_id: str) -> float | None: ...  # EncoderWorker.add_stream

    async def push(self, stream_id: str, image: np.ndarray, pts: float, arrival: float) -> str | None: ...


IN_FLIGHT = 2  # frames of one stream on their way to the encoder at once


class Ingest:
    """Pulls frames from the sampler and pushes them to the current target, at most IN_FLIGHT at a time:
    while the encoder is busy the sampler drops frames (the oldest, and any that waited past its
    max_delay), so a slow encoder never backs up into the camera. Two in flight, not one, so that the
    encoder finds each stream's next frame already waiting when a pass ends: with one, a stream whose
    frame came in just after a pass began would be served every other pass only, and the passes would run
    half full. A target that fails or does not answer is retried after `retry_delay` (frames meanwhile
    are lost, not queued); one that says "unknown stream" (restarted, or a new one after a move) is
    attached first, which restores the stream from its snapshot."""

    def __init__(self, stream_id: str, spec: str, cfg: Config, source: Source | None = None,
                 retry_delay: float = 0.5, decode_gate: contextlib.AbstractContextManager | None = None):
        self.stream_id, self.spec, self.cfg, self.retry_delay = stream_id, spec, cfg, retry_delay
        self.source = source or open_source(spec, cfg.source)
        self.source.resize = cfg.frame_size  # frames leave this process at the encoder's input size
        self.source.decode_gate = decode_gate
        self.sampler = Sampler(self.source, cfg.sampler)
        self.target: EncoderTarget | None = None
        self.frames_sent = 0
        self.push_failures = 0
        self._attached = False
        self._attaching = asyncio.Lock()  # one attach at a time, and the first frame's before the second's
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
        slots = asyncio.Semaphore(IN_FLIGHT)
        sends: set[asyncio.Task] = set()

        def done(task: asyncio.Task) -> None:
            sends.discard(task)
            slots.release()

        try:
            # a frame is None once the source ended; a source that gave up raises SourceFailed, and its status says why
            with contextlib.suppress(Exception):
                while True:
                    await slots.acquire()  # before taking the frame: the freshest one goes
                    if (frame := await self.sampler.get()) is None:
                        break
                    # Frame.arrival is this machine's monotonic clock; the encoder may run on another machine
                    arrival = time.time() - (time.monotonic() - frame.arrival)
                    task = asyncio.create_task(self._send(frame.image, frame.pts, arrival))
                    sends.add(task)
                    task.add_done_callback(done)
            await asyncio.gather(*sends, return_exceptions=True)  # the source ended: its last frames still go
        finally:  # closed: frames on their way are dropped
            for task in list(sends):
                task.cancel()

    async def _send(self, image: np.ndarray, pts: float, arrival: float) -> None:
        while self.target is not None:
            target = self.target
            try:
                async with self._attaching:
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
