"""Standing queries ("watches"): a question asked of a stream each time a cube closes, over its newest cubes,
and the hysteresis that turns a run of matching answers into one alert.

    watch = Watch.from_request("cam1", {"question": "How many objects are in view?", "answer": ["1", "2", "3"]})
    state = WatchState()
    if state.update(matched=answer in watch.answers, start=cube_start, end=cube_end, cooldown_s=watch.cooldown_s, ...):
        ...  # one alert

A watch fires when its answer matches on `confirm` evaluations in a row while it is armed. It then stays
quiet (disarmed) until the answer has not matched for `clear_s` seconds of stream time, so one event that
lasts many cubes is one alert, and a flicker of one wrong answer neither ends it nor starts a new one.
`cooldown_s` (stream seconds from one alert to the next) bounds the rate whatever the answers do.

`Watcher` is the loop that runs the watches of every stream: it looks for newly closed cubes, asks over
each, updates the states and publishes the firings. It talks to the runtime through two callables, so it runs without Ray
in tests.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

YES_NO = ["yes", "no"]


class WatchError(ValueError):
    """A watch request that cannot be kept (the gateway answers 400, or 404/409 via `status`)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class WatchState:
    """Where a watch's hysteresis stands; saved with the watch so a restart does not alert twice for one event."""
    armed: bool = True
    matches: int = 0  # matching evaluations in a row
    unmatched_since: float | None = None  # stream time the answer stopped matching (while disarmed)
    last_fired: float | None = None  # stream time (the cube's end) of the last alert
    last_end: float | None = None  # the end of the newest cube evaluated

    def update(self, matched: bool, start: float, end: float, confirm: int, clear_s: float, cooldown_s: float) -> bool:
        """Take one evaluation over a cube spanning [start, end] (stream s); True when it fires an alert."""
        self.last_end = end
        if not self.armed:
            if matched:
                self.unmatched_since = None
            else:
                if self.unmatched_since is None:
                    self.unmatched_since = start
                if end - self.unmatched_since >= clear_s:
                    self.armed, self.matches, self.unmatched_since = True, 0, None
            return False
        self.matches = self.matches + 1 if matched else 0
        cooled = self.last_fired is None or end - self.last_fired >= cooldown_s
        if self.matches >= confirm and cooled:
            self.armed, self.matches, self.unmatched_since, self.last_fired = False, 0, None, end
            return True
        return False


@dataclass
class Watch:
    id: str
    stream: str
    question: str
    answers: list[str]  # the answers that fire it (compared without case or surrounding spaces)
    options: list[str] | None = None  # asked as multiple choice where given (a yes/no question: yes, no)
    window_s: float = 30.0  # the newest this many seconds of stream time are asked about
    confirm: int = 1  # matching evaluations in a row before it fires
    clear_s: float = 8.0  # seconds (stream time) the answer must stop matching before it can fire again
    cooldown_s: float = 30.0  # seconds (stream time) from one alert to the next at least
    created: float = field(default_factory=time.time)
    state: WatchState = field(default_factory=WatchState)

    FIELDS = {"id": str, "question": str, "answer": (str, list), "options": list, "window_s": (int, float),
              "confirm": int, "clear_s": (int, float), "cooldown_s": (int, float)}

    @classmethod
    def from_request(cls, stream: str, body, max_question_chars: int = 1000) -> Watch:
        """A watch from a request body: `question`, and `answer` (one or a list) that fires it, or none for a
        yes/no question (fires on yes); optional `options`, `window_s`, `confirm`, `clear_s`, `cooldown_s`, `id`."""
        if not isinstance(body, dict):
            raise WatchError("the body must be an object")
        for key, value in body.items():
            if key not in cls.FIELDS:
                raise WatchError(f"unknown field {key!r}; expected {', '.join(cls.FIELDS)}")
            if isinstance(value, bool) or not isinstance(value, cls.FIELDS[key]):
                raise WatchError(f"field {key!r} has the wrong type")
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            raise WatchError("missing field: question")
        if len(question) > max_question_chars:
            raise WatchError(f"the question is longer than {max_question_chars} characters")
        answer = body.get("answer")
        options = body.get("options")
        if answer is None:  # a yes/no question
            answers, options = ["yes"], options or list(YES_NO)
        else:
            answers = [answer] if isinstance(answer, str) else answer
            if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
                raise WatchError("answer must be a non-empty string or a non-empty list of them")
        answers = [_norm(a) for a in answers]
        if options is not None:
            if not all(isinstance(o, str) and o.strip() for o in options) or len(options) < 2:
                raise WatchError("options must be a list of at least two non-empty strings")
            if not set(answers) <= {_norm(o) for o in options}:
                raise WatchError("every answer that fires the watch must be one of its options")
        watch = cls(id=body.get("id") or secrets.token_hex(4), stream=stream, question=question.strip(),
                    answers=answers, options=options)
        for key in ("window_s", "clear_s", "cooldown_s"):
            if key in body:
                if not 0 <= body[key] <= 86400 or (key == "window_s" and body[key] <= 0):
                    raise WatchError(f"{key} must lie in {'(0' if key == 'window_s' else '[0'}, 86400] seconds")
                setattr(watch, key, float(body[key]))
        if "confirm" in body:
            if not 1 <= body["confirm"] <= 100:
                raise WatchError("confirm must lie in [1, 100]")
            watch.confirm = body["confirm"]
        if not 1 <= len(watch.id) <= 64 or not all(c.isalnum() or c in "_-." for c in watch.id):
            raise WatchError("a watch id is 1-64 of letters, digits, _ - .")
        return watch

    def fires_on(self, answer: str) -> bool:
        return _norm(answer) in self.answers

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Watch:
        return cls(**{**d, "state": WatchState(**d.get("state", {}))})


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class Firing:
    """A watch's alert: what the Watcher hands to whoever publishes events."""
    watch: Watch
    answer: str
    start: float  # the evaluated cube's span (stream s)
    end: float
    entry: int  # its memory entry (for the thumbnail)


Timeline = Callable[[str], Awaitable[list[dict]]]  # stream id -> its memory entries (timeline rows), oldest first
Ask = Callable[[str, str, float, float, list | None], Awaitable[dict]]  # stream, question, start, end, options -> answer
Publish = Callable[[Firing], Awaitable[None]]

BACKLOG = 16  # at most this many closed cubes a watch catches up on at once (after a stall, or when it starts)


class Watcher:
    """Runs every watch: each `poll` seconds, for each stream with watches, evaluates each watch on every cube
    closed since the last it saw (oldest first, each over the `window_s` seconds ending with that cube), so
    the hysteresis sees every cube even when several closed between two looks. A new watch starts at the
    newest cube."""

    def __init__(self, watches: dict[str, Watch], timeline: Timeline, ask: Ask, publish: Publish,
                 on_change: Callable[[], None], poll: float = 0.25):
        self.watches, self.timeline, self.ask, self.publish = watches, timeline, ask, publish
        self.on_change, self.poll = on_change, poll
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="watcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            by_stream: dict[str, list[Watch]] = {}
            for w in list(self.watches.values()):
                by_stream.setdefault(w.stream, []).append(w)
            if by_stream:  # streams in parallel: one slow stream does not hold up the others
                await asyncio.gather(*(self.step(sid, ws) for sid, ws in by_stream.items()))
            await asyncio.sleep(self.poll)

    async def step(self, stream: str, watches: list[Watch]) -> None:
        """Evaluate `watches` (all of `stream`) on the cubes closed since each last looked."""
        try:
            entries = await self.timeline(stream)
        except Exception as e:  # the stream is gone or its encoder busy: look again next time
            log.debug("watcher: %s: %r", stream, e)
            return
        changed = False
        for w in watches:
            last = w.state.last_end
            new = [e for e in entries if last is None or e["end"] > last][-(1 if last is None else BACKLOG):]
            for entry in new:
                try:
                    a = await self.ask(stream, w.question, max(0.0, entry["end"] - w.window_s), entry["end"], w.options)
                except Exception as e:  # this cube is tried again on the next look
                    log.warning("watch %s on %s: %r", w.id, stream, e)
                    break
                armed = w.state.armed
                fired = w.state.update(w.fires_on(a["text"]), entry["start"], entry["end"], w.confirm, w.clear_s,
                                       w.cooldown_s)
                changed |= w.state.armed != armed  # saved on a change of phase, not on every cube
                if fired and self.watches.get(w.id) is w:  # not removed while it was asked
                    await self.publish(Firing(w, a["text"], entry["start"], entry["end"], entry["id"]))
        if changed:
            self.on_change()
