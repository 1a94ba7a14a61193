"""Questions about a SynthWorld, with answers taken from its ground-truth log.

Every question is asked at a stream time `t_now` and can be answered from what the camera showed up to
then. Answers are short canonical strings from a closed vocabulary, so a tiny LLM can emit them token by
token and an evaluator can compare them exactly:

    shape    "square" | "circle" | "triangle" | "bar" | "cross"
    colour   "red" | "green" | "blue" | "yellow" | "white" | "purple"
    count    "0" .. "9"
    order    "<colour> <shape>", e.g. "red circle" (an object as it looked when it entered)
    present  "yes" | "no"
    when     "t=<whole seconds>s", e.g. "t=1234s"; `answer_time` holds the exact time for scoring with a tolerance

"Which entered first: the A or the B?" and "Is ... still there?" offer their answers (`options`): an
evaluator asks them as multiple choice. Questions name times in the same "t=...s" form. Objects are named as they looked at the event asked
about: "the red circle that entered at t=...s" was red as it entered, even if it has changed since. Each question carries the span of stream time its evidence lies in, and is
tagged by how long before `t_now` that evidence begins (its recall slice).
"""
from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from functools import partial

from stream.synth import ENTER_S, Event, SynthWorld
from stream.timefmt import format_time, parse_time

KINDS = ("shape", "colour", "count", "order", "present", "when")
WHEN_KINDS = ("enter", "leave", "change")  # the events a "When did ... last ...?" question can ask about
SLICES = ("last_10s", "last_1m", "last_10m", "older")
SLICE_AGES = (10.0, 60.0, 600.0, math.inf)  # upper bound (s, inclusive) of each slice's evidence age
COUNT_SPANS = (10, 20, 30, 60, 120, 300)  # lengths (s) of the windows "how many entered" asks about
CLEAR_S = 1.5  # a time a question names must lie at least this far from any event it could be confused with


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    kind: str  # one of KINDS
    evidence_time: tuple[float, float]  # stream time span (s) the answer is seen in
    age_slice: str  # one of SLICES: how long before `asked_at` the evidence begins
    asked_at: float  # t_now
    answer_time: float | None = None  # "when" questions: the exact true time
    cues: tuple[float, ...] = ()  # when each logged event the answer rests on began (none: what is in view now)
    options: tuple[str, ...] = ()  # the answers the question offers ("the A or the B?", yes or no); none: open
    event_key: tuple = ()  # the `when_key` of the event asked about ("when"), or of the enter named ("is the .. that
    #   entered at t=..s still there?", "what entered next after the .. that entered at t=..s?")


def age_slice(age: float) -> str:
    for name, hi in zip(SLICES, SLICE_AGES):
        if age <= hi:
            return name
    raise ValueError(f"age must be a number >= 0, got {age!r}")


WHEN_TOLERANCE_S = 3.0  # a "when" answer this close to the true time is right


def is_correct(q: Question, prediction: str, time_tol: float = WHEN_TOLERANCE_S) -> bool:
    """Exact match after normalizing case and spaces; "when" answers within `time_tol` seconds."""
    if q.answer_time is not None:
        t = parse_time(prediction)
        return t is not None and abs(t - q.answer_time) <= time_tol
    return " ".join(prediction.lower().split()) == q.answer


def make_questions(world: SynthWorld, t_now: float, rng: int | random.Random = 0, n: int = 8,
                   kinds: tuple[str, ...] = KINDS, slices: tuple[str, ...] = SLICES,
                   max_age: float = math.inf, shown: list[tuple[float, float]] | None = None) -> list[Question]:
    """Up to `n` questions asked at `t_now`, spread evenly over the given kinds and slices.

    Fewer come back when the log cannot support them (a young world has nothing older than a minute).
    `max_age` bounds how far back evidence may lie (the "older" slice is otherwise unbounded). `shown`: the
    (start, end) stretches of stream time a viewer saw, the last ending at `t_now`; only questions whose
    evidence lies in them are asked.
    """
    bad = [k for k in kinds if k not in KINDS] + [s for s in slices if s not in SLICES]
    if bad or not kinds or not slices:
        raise ValueError(f"questions: unknown or empty kinds/slices {bad or (kinds, slices)}; kinds {KINDS}, slices {SLICES}")
    if n < 0 or not max_age > 0:
        raise ValueError(f"questions: n must be >= 0 and max_age > 0, got n={n}, max_age={max_age}")
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    log = _Log(world, t_now, max_age, shown)
    out: list[Question] = []
    asked = dict.fromkeys((*slices, *kinds), 0)
    asked_texts: set[str] = set()
    live = list(slices)
    while len(out) < n and live:
        # Keep slices and kinds even: ask the least-asked slice, trying the least-asked
        # kinds first. Askers decline when nothing fits; a slice where every kind declines is dropped.
        target = min(live, key=lambda s: (asked[s], rng.random()))
        for kind in sorted(kinds, key=lambda k: (asked[k], rng.random())):
            q = next(filter(None, (_ask(log, kind, target, rng) for _ in range(8))), None)
            if q is not None and q.text in asked_texts:  # a thin log offers few questions: never the same twice
                q = None
            if q is not None:
                out.append(q)
                asked_texts.add(q.text)
                asked[target] += 1
                asked[kind] += 1
                break
        else:
            live.remove(target)
    return out


def _ask(log: _Log, kind: str, target: str, rng: random.Random) -> Question | None:
    q = _ASKERS[kind](log, target, rng)
    if q is None or q.age_slice != target or log.now - q.evidence_time[0] > log.max_age:
        return None
    # "is it still there" needs only its entry seen: now ends the last stretch, and a leaving between
    # stretches is told by the object's absence. A count or an order needs the entries it rests on (its cues)
    # seen, not all of its span: a gap between stretches may hide entries that do not bear on it. So a viewer
    # of a few stretches is asked about spans of minutes, as a live prompt of cubes picked from a long memory
    # is. One with no cues (none entered) needs its whole span, else an entry in a gap would be missed.
    t0, t1 = q.evidence_time
    if q.kind == "present":
        return q if log.shows(t0, t0) else None
    if q.kind in ("count", "order") and q.cues:
        return q if all(log.shows(t, t) for t in q.cues) else None
    return q if log.shows(t0, t1) else None


class _Log:
    """The log up to t_now, indexed for the askers."""

    def __init__(self, world: SynthWorld, t_now: float, max_age: float, shown: list[tuple[float, float]] | None):
        self.world, self.now, self.max_age, self.shown = world, t_now, max_age, shown
        self.events = world.events_until(t_now)
        self.times = [e.t for e in self.events]
        self.enters = [e for e in self.events if e.kind == "enter"]
        self.enter_times = [e.t for e in self.enters]
        self.enter_of = {e.obj: e for e in self.enters}
        self.leave_of = {e.obj: e for e in self.events if e.kind == "leave"}
        self._last: list[Event] | None = None

    def shows(self, t0: float, t1: float, slack: float = 1.0) -> bool:
        """Does all of [t0, t1] lie in the stretches shown (always, when none were given)?"""
        if self.shown is None:
            return True
        reached = t0  # how far from t0 the stretches so far cover without a gap
        for a, b in sorted(self.shown):
            if a - slack <= reached <= b + slack:
                reached = b + slack
                if reached >= t1:
                    return True
        return False

    def done(self, e: Event) -> bool:
        """Has the event's visible motion finished by t_now?"""
        return e.t + e.duration <= self.now

    def pick(self, target: str, kinds: tuple[str, ...], rng: random.Random, tries: int = 16) -> Event | None:
        """A random finished event of one of `kinds` whose age lies in slice `target`."""
        i = SLICES.index(target)
        lo, hi = (SLICE_AGES[i - 1] if i else 0.0), min(SLICE_AGES[i], self.max_age)
        a, b = bisect.bisect_left(self.times, self.now - hi), bisect.bisect_left(self.times, self.now - lo)
        found = [i for i in range(a, b) if self.shows(self.times[i], self.times[i])]
        for _ in range(tries if found else 0):
            e = self.events[rng.choice(found)]
            if e.kind in kinds and self.done(e):
                return e
        return None

    def lone(self, e: Event) -> bool:
        """Is e the only event of its kind near its (rounded) time, so that "at t=...s" names it?"""
        a, b = bisect.bisect_left(self.times, e.t - 2.5), bisect.bisect_right(self.times, e.t + 2.5)
        return sum(x.kind == e.kind for x in self.events[a:b]) == 1

    def clear_of_enters(self, t: float) -> bool:
        """No object starts entering within CLEAR_S of t, so "entered after t" has one reading."""
        a = bisect.bisect_left(self.enter_times, t - CLEAR_S)
        return a == len(self.enter_times) or self.enter_times[a] > t + CLEAR_S

    def in_view(self):
        """Objects in view now, or None while one is half in view (entering or leaving)."""
        last = self.events[-1] if self.events else None
        if last is not None and last.kind in ("enter", "leave") and not self.done(last):
            return None
        return self.world.objects_at(self.now)

    def lasts(self) -> list[Event]:
        """The most recent event of each description a "When did ... last ...?" question can give."""
        if self._last is None:  # built once per call: one pass over the log
            last: dict[tuple, Event] = {}
            for x in reversed(self.events):
                if x.kind in WHEN_KINDS:
                    last.setdefault(when_key(x), x)
            self._last = sorted(last.values(), key=lambda x: x.t)
        return self._last

    def question(self, text, answer, kind, t0, t1, cues=(), answer_time=None, options=(), event_key=()) -> Question:
        return Question(text, answer, kind, (t0, t1), age_slice(self.now - t0), self.now, answer_time, tuple(cues),
                        tuple(options), event_key)


def _desc(e: Event) -> str:
    return f"{e.colour} {e.shape}"


def when_key(e: Event) -> tuple:
    """What a "when" question says about an event: a change by its new colour, others by colour and shape.
    Events alike by this key are the look-alikes that "last" tells apart."""
    return (e.kind, e.colour) if e.kind == "change" else (e.kind, e.colour, e.shape)


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _ask_shape(log: _Log, target: str, rng: random.Random) -> Question | None:
    if target == "last_10s" and rng.random() < 0.3:  # about what is in view now
        objs = log.in_view() or []
        o = rng.choice(objs) if objs else None
        if o is None or [x.colour for x in objs].count(o.colour) > 1:
            return None
        return log.question(f"What shape is the {o.colour} object?", o.shape, "shape", log.now, log.now)
    e = log.pick(target, ("enter", "change"), rng)
    if e is None or not log.lone(e):
        return None
    verb = "entered" if e.kind == "enter" else "changed colour"
    return log.question(f"What shape {verb} at {format_time(e.t)}?", e.shape, "shape", e.t, e.t + e.duration, [e.t])


def _ask_colour(log: _Log, target: str, rng: random.Random) -> Question | None:
    if target == "last_10s" and rng.random() < 0.3:
        objs = log.in_view() or []
        o = rng.choice(objs) if objs else None
        if o is None or [x.shape for x in objs].count(o.shape) > 1:
            return None
        return log.question(f"What colour is the {o.shape}?", o.colour, "colour", log.now, log.now)
    e = log.pick(target, ("enter", "change"), rng)
    if e is None or not log.lone(e):
        return None
    text = (f"What colour was the object that entered at {format_time(e.t)}?" if e.kind == "enter"
            else f"What colour did the {e.shape} turn at {format_time(e.t)}?")
    return log.question(text, e.colour, "colour", e.t, e.t + e.duration, [e.t])


def _ask_count(log: _Log, target: str, rng: random.Random) -> Question | None:
    if target == "last_10s" and rng.random() < 0.5:
        objs = log.in_view()
        if objs is None:
            return None
        return log.question("How many objects are in view?", str(len(objs)), "count", log.now, log.now)
    e = log.pick(target, ("enter",), rng)
    if e is None:
        return None
    span = rng.choice([s for s in COUNT_SPANS if s <= SLICE_AGES[SLICES.index(target)]])
    a = round(e.t - rng.uniform(CLEAR_S, span - CLEAR_S))
    b = a + span
    since = b > log.now - ENTER_S  # the window would run into the present: ask "since" instead
    if a < 0 or not log.clear_of_enters(a) or not (since or log.clear_of_enters(b)):
        return None
    if since:  # an object still sliding in counts as entered, so its motion must be over
        if not log.done(log.enters[-1]):
            return None
        b = log.now
    # The noun: all objects, or a colour or a shape; mostly the anchor's, so that counts are often > 0.
    noun = rng.choice(("all", "colour", "shape"))
    value = None
    if noun != "all":
        value = getattr(e, noun) if rng.random() < 0.7 else rng.choice(getattr(log.world.params, noun + "s"))
    return _count_question(log, a, b, noun, value, since)


def _count_question(log: _Log, a: float, b: float, noun: str, value: str | None, since: bool = False) -> Question | None:
    lo, hi = bisect.bisect_left(log.enter_times, a), bisect.bisect_left(log.enter_times, b)
    entered = [x for x in log.enters[lo:hi] if noun == "all" or getattr(x, noun) == value]
    if len(entered) > 9:
        return None
    words = "objects" if noun == "all" else f"{value} objects" if noun == "colour" else _plural(value)
    window = f"since {format_time(a)}" if since else f"between {format_time(a)} and {format_time(b)}"
    return log.question(f"How many {words} entered {window}?", str(len(entered)), "count", a, b, [x.t for x in entered])


def count_question(world: SynthWorld, t_now: float, a: float, b: float, noun: str = "all",
                   value: str | None = None) -> Question | None:
    """"How many {objects | <value> objects | <value>s} entered between t=a and t=b?" asked at `t_now`, for
    `noun` "all", "colour" or "shape"; None over 9. The caller keeps a and b clear of entries (CLEAR_S)."""
    return _count_question(_Log(world, t_now, math.inf, None), a, b, noun, value)


def _ask_order(log: _Log, target: str, rng: random.Random) -> Question | None:
    e = log.pick(target, ("enter",), rng)
    if e is None:
        return None
    i = bisect.bisect_left(log.enter_times, e.t)
    if rng.random() < 0.5:  # what entered right after a named object
        nxt = log.enters[i + 1] if i + 1 < len(log.enters) else None
        if nxt is None or not log.done(nxt) or not log.lone(e):
            return None
        return log.question(f"What entered next after the {_desc(e)} that entered at {format_time(e.t)}?",
                            _desc(nxt), "order", e.t, nxt.t + nxt.duration, [e.t, nxt.t], event_key=when_key(e))
    # Which of two descriptions first entered after a time: "the red circle" is the first one after it. Seeing
    # from `a` to the earlier entry settles it (the other had not entered by then): its evidence ends there.
    a = round(e.t - rng.uniform(CLEAR_S, 20))
    if a < 0 or not log.clear_of_enters(a):
        return None
    first: dict[str, Event] = {}
    for x in log.enters[bisect.bisect_left(log.enter_times, a):]:
        if len(first) == 4 or not log.done(x):
            break
        first.setdefault(_desc(x), x)
    if len(first) < 2:
        return None
    d1, d2 = rng.sample(sorted(first), 2)
    early = min(first[d1], first[d2], key=lambda x: x.t)
    return log.question(f"Which entered first after {format_time(a)}: the {d1} or the {d2}?",
                        _desc(early), "order", a, early.t + early.duration, [early.t], options=(d1, d2))


def _ask_present(log: _Log, target: str, rng: random.Random) -> Question | None:
    # Choose the answer first, so that yes and no are equally likely wherever the log allows both.
    if rng.random() < 0.5:
        objs = log.in_view() or []
        if not objs:
            return None
        e = log.enter_of[rng.choice(objs).obj]  # in_view() vouches it is fully in: entered, not leaving
    else:
        e = log.pick(target, ("enter",), rng)
        leave = log.leave_of.get(e.obj) if e is not None else None
        if leave is None or not log.done(leave):
            return None
    if not log.lone(e):
        return None
    gone = log.leave_of.get(e.obj)
    return log.question(f"Is the {_desc(e)} that entered at {format_time(e.t)} still there?",
                        "no" if gone else "yes", "present", e.t, gone.t + gone.duration if gone else log.now,
                        [e.t, gone.t] if gone else [e.t], options=("yes", "no"), event_key=when_key(e))


def _ask_when(log: _Log, target: str, rng: random.Random) -> Question | None:
    # Only the last event of each description can be asked about, so pick among those.
    fits = [e for e in log.lasts() if age_slice(log.now - e.t) == target]
    return _when_question(log, rng.choice(fits)) if fits else None


def _when_question(log: _Log, e: Event) -> Question | None:
    if not log.done(e):  # still sliding in or out
        return None
    text = (f"When did something last turn {e.colour}?" if e.kind == "change"
            else f"When did a {_desc(e)} last {e.kind}?")
    return log.question(text, format_time(e.t), "when", e.t, e.t + e.duration, [e.t], answer_time=e.t,
                        event_key=when_key(e))


def when_questions(world: SynthWorld, t_now: float) -> list[Question]:
    """Every "When did ... last ...?" question the log up to `t_now` answers: one per description (a
    `when_key`) of event, about its latest one, in time order."""
    log = _Log(world, t_now, math.inf, None)
    return [q for q in map(partial(_when_question, log), log.lasts()) if q is not None]


_ASKERS = {"shape": _ask_shape, "colour": _ask_colour, "count": _ask_count, "order": _ask_order,
           "present": _ask_present, "when": _ask_when}
