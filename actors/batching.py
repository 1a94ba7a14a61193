"""Frames of many streams on their way to an encoder, batched at both ends of the call.

An ingest worker's streams share one FrameBatcher per encoder: the frames they push within `wait` seconds of
the first go in one call. The encoder
queues what arrives per stream in an EncoderIntake, whose passes take the oldest frame of each stream,
in turn, so that streams are served alike however many there are.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import numpy as np

Item = tuple[str, np.ndarray, float, float]  # (stream id, uint8 [H, W, 3], stream time, arrival on time.time())
SendBatch = Callable[[list[str], list[np.ndarray], list[float], list[float]], Awaitable[list]]


class FrameBatcher:
    """An encoder as the many streams of one process see it: `push` has the EncoderTarget's form (one frame,
    waits for its answer); the frames pushed within `wait` seconds of the first go in one call (with wait 0:
    those pushed before the event loop next turns), so a busy worker makes few calls with many frames, and
    the encoder runs them in one batched pass: per frame, a call and a pass cost several times less in
    batches of 8 than alone. Calls do not wait for each other: each stream bounds its own frames in flight
    (actors.ingest.Ingest). The frames travel as the arrays they are, not stacked into one: Ray writes each
    array's buffer once, and the encoder reads it in place."""

    def __init__(self, send: SendBatch, wait: float = 0.0):
        self.send, self.wait = send, wait
        self.calls = 0
        self._pending: list[tuple[Item, asyncio.Future]] = []

    async def push(self, stream_id: str, image: np.ndarray, pts: float, arrival: float) -> str | None:
        fut = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.create_task(self._flush())
        self._pending.append(((stream_id, image, pts, arrival), fut))
        return await fut

    async def _flush(self) -> None:
        await asyncio.sleep(self.wait)  # the pushes of the other streams meanwhile join this call
        batch, self._pending = self._pending, []
        self.calls += 1
        try:
            results = await self.send(*(list(col) for col in zip(*(item for item, _ in batch))))
        except Exception as e:  # every frame of the call failed alike; each stream's Ingest retries
            results = [e] * len(batch)
        _settle([fut for _, fut in batch], results)


class EncoderIntake:
    """The encoder's queue: frames arrive in batches from many ingest workers and wait per stream; one pass
    runs at a time (`run_pass`, which answers per stream None or why its frame was refused) and takes the
    oldest frame of up to `max_batch` streams. Streams are taken in turn (a stream served goes to the
    back), so none waits more passes than its share whatever the number of streams."""

    def __init__(self, run_pass: Callable[[list[Item]], Awaitable[dict[str, str | None]]], max_batch: int):
        self.run_pass, self.max_batch = run_pass, max_batch
        self.passes = 0
        self._pending: OrderedDict[str, list[tuple[Item, asyncio.Future]]] = OrderedDict()
        self._wake: asyncio.Event | None = None

    async def submit(self, items: list[Item]) -> list:
        """Per item: None (taken), why it was refused, or the exception that failed its pass."""
        if self._wake is None:
            self._wake = asyncio.Event()
            asyncio.create_task(self._loop())
        loop = asyncio.get_running_loop()
        futs = []
        for item in items:
            futs.append(loop.create_future())
            self._pending.setdefault(item[0], []).append((item, futs[-1]))
        self._wake.set()
        return list(await asyncio.gather(*futs, return_exceptions=True))

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                taken = []
                for sid in list(self._pending)[:self.max_batch]:
                    queue = self._pending[sid]
                    taken.append(queue.pop(0))
                    if queue:
                        self._pending.move_to_end(sid)
                    else:
                        del self._pending[sid]
                try:
                    result = await self.run_pass([item for item, _ in taken])
                    self.passes += 1
                    results = [result[item[0]] for item, _ in taken]
                except Exception as e:  # a bug, not a client's doing: fail these frames, keep serving
                    results = [e] * len(taken)
                _settle([fut for _, fut in taken], results)


def _settle(futs: list[asyncio.Future], results: list) -> None:
    for fut, r in zip(futs, results):
        if fut.done():  # its caller went away meanwhile
            continue
        if isinstance(r, Exception):
            fut.set_exception(r)
        else:
            fut.set_result(r)
