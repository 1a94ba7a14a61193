"""Events (a watch's alerts) and their three ways out: the list, Server-Sent Events and webhooks.

    log = EventLog(state_dir / "events.jsonl", kept=10000)
    event = log.append(stream="cam1", watch="w1", ...)      # persisted, then handed to every SSE subscriber
    hooks = Webhooks([WebhookConfig(url, secret)], ...); hooks.start(); hooks.publish(event)
    return await sse(request, log, last_event_id)           # an aiohttp handler's response

The log is a JSON-lines file (one event a line, appended and fsynced), read back at start; the newest
`kept` events stay in memory for the list and for SSE replay. Event ids increase by one from 1, so an SSE
client that reconnects with `Last-Event-ID: n` gets every event after n that is still kept, then live ones.

Webhooks: every event is POSTed as JSON to each configured URL with
    X-Cubestream-Event: <id>
    X-Cubestream-Timestamp: <unix seconds>
    X-Cubestream-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the URL's secret>
Each URL has its own queue and sender task: deliveries to one URL go in order, a failure (an error status,
a refused connection, no answer within the timeout) is retried after a delay that doubles up to a cap,
and a URL that is down or hangs delays only its own queue, never the streams, the watches or other URLs.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import aiohttp
from aiohttp import web

from configs import WebhookConfig

log = logging.getLogger(__name__)

SSE_HEARTBEAT_S = 15.0


@dataclass
class Event:
    id: int
    time: float  # wall clock (unix s) it was published
    stream: str
    watch: str
    question: str
    answer: str
    start: float  # the stream time span (s) the alert was raised on
    end: float
    entry: int  # the memory entry of that span
    thumbnail: str  # path of the entry's JPEG on the gateway

    def as_dict(self) -> dict:
        return asdict(self)


class EventLog:
    def __init__(self, path: Path, kept: int = 10000):
        self.path, self.kept = Path(path), kept
        self.events: deque[Event] = deque(maxlen=kept)
        self.next_id = 1
        self._subscribers: set[asyncio.Queue] = set()
        self._load()

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    e = Event(**json.loads(line))
                except (ValueError, TypeError):  # a line torn by a crash mid-write: the rest is whole
                    log.warning("%s: skipped an unreadable line", self.path)
                    continue
                self.events.append(e)
                self.next_id = max(self.next_id, e.id + 1)

    def append(self, **fields) -> Event:
        """Persist a new event (fields of Event but id and time) and hand it to every live subscriber."""
        e = Event(id=self.next_id, time=time.time(), **fields)
        self.next_id += 1
        with open(self.path, "ab") as f:
            f.write(json.dumps(e.as_dict()).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.events.append(e)
        for q in list(self._subscribers):
            try:
                q.put_nowait(e)
            except asyncio.QueueFull:  # a reader too slow to keep up: end its stream; it resumes by Last-Event-ID
                self._subscribers.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)
        return e

    def list(self, after: int | None = None, since: float | None = None, stream: str | None = None,
             watch: str | None = None, limit: int | None = None) -> list[Event]:
        """Kept events, oldest first: with id > after, time > since, of a stream or watch; the last `limit`."""
        out = [e for e in self.events if (after is None or e.id > after) and (since is None or e.time > since)
               and (stream is None or e.stream == stream) and (watch is None or e.watch == watch)]
        return out[-limit:] if limit else out

    def subscribe(self, size: int = 1000) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(size)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def close(self) -> None:
        """End every SSE stream (the server is stopping)."""
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        self._subscribers.clear()


async def sse(request: web.Request, events: EventLog, last_id: int | None, stream: str | None = None,
              heartbeat: float = SSE_HEARTBEAT_S) -> web.StreamResponse:
    """Server-Sent Events: every kept event after `last_id` (of `stream`, if given), then each new one as it
    happens, with a comment line every `heartbeat` seconds so proxies keep the connection open."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    q = events.subscribe()  # before the replay, so nothing falls between the two
    sent = last_id or 0
    try:
        for e in events.list(after=sent, stream=stream):
            await resp.write(_sse_frame(e))
            sent = e.id
        while True:
            try:
                e = await asyncio.wait_for(q.get(), heartbeat)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if e is None:
                break
            if e.id > sent and (stream is None or e.stream == stream):
                await resp.write(_sse_frame(e))
                sent = e.id
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        events.unsubscribe(q)
    return resp


def _sse_frame(e: Event) -> bytes:
    return f"id: {e.id}\nevent: alert\ndata: {json.dumps(e.as_dict())}\n\n".encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Cubestream-Signature value a receiver recomputes to check a delivery."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Webhooks:
    """Delivers events to every configured URL; `on_result(url, outcome)` is told each outcome: "delivered",
    "failed" (an attempt that will be retried), "gave_up" (retries spent), "dropped" (its queue was full)."""

    def __init__(self, hooks: list[WebhookConfig], timeout: float = 5.0, retries: int = 8, backoff: float = 1.0,
                 backoff_max: float = 60.0, queue_size: int = 1000,
                 on_result: Callable[[str, str], None] = lambda url, outcome: None):
        self.hooks, self.timeout, self.retries = hooks, timeout, retries
        self.backoff, self.backoff_max, self.queue_size, self.on_result = backoff, backoff_max, queue_size, on_result
        self._queues: list[asyncio.Queue] = []
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._session is not None or not self.hooks:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        for hook in self.hooks:
            q: asyncio.Queue = asyncio.Queue(self.queue_size)
            self._queues.append(q)
            self._tasks.append(asyncio.create_task(self._deliver(hook, q), name=f"webhook {hook.url}"))

    def publish(self, event: Event) -> None:
        """Queue `event` for every URL; never waits."""
        body = json.dumps(event.as_dict()).encode()
        for hook, q in zip(self.hooks, self._queues):
            if q.full():
                q.get_nowait()
                self.on_result(hook.url, "dropped")
            q.put_nowait((event.id, body))

    async def _deliver(self, hook: WebhookConfig, q: asyncio.Queue) -> None:
        while True:
            event_id, body = await q.get()
            for attempt in range(self.retries + 1):
                if await self._post(hook, event_id, body):
                    self.on_result(hook.url, "delivered")
                    break
                if attempt == self.retries:
                    self.on_result(hook.url, "gave_up")
                    log.warning("webhook %s: gave up on event %d after %d attempts", hook.url, event_id, attempt + 1)
                    break
                self.on_result(hook.url, "failed")
                delay = min(self.backoff * 2 ** attempt, self.backoff_max)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # jitter: hooks that failed together spread out

    async def _post(self, hook: WebhookConfig, event_id: int, body: bytes) -> bool:
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Cubestream-Event": str(event_id),
                   "X-Cubestream-Timestamp": ts, "X-Cubestream-Signature": sign(hook.secret, ts, body)}
        try:
            async with self._session.post(hook.url, data=body, headers=headers) as r:
                return 200 <= r.status < 300
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            log.debug("webhook %s: %r", hook.url, e)
            return False

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
