"""The synthetic world's training clips: stretches of a world's stream with questions from its log, and the
true events, objects in view and object positions that the training-only probes learn (`probes`).

The stretches are laid where the questions' evidence lies in ways live prompts show it and random stretches
rarely do: an earlier look-alike of an event shown (`with_lookalike`), two entries with none between them
too far apart for one stretch (`on_consecutive_entries`), every entry a count counts (`on_counted_entries`)."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from configs import Config, TrainConfig
from models.llm import time_text
from models.synthetic.vocabulary import ATTRIBUTES, EVENT_KEYS
from models.train import FPS, Clip
from stream.questions import (CLEAR_S, COUNT_SPANS, WHEN_KINDS, Question, count_question, make_questions, when_key,
                              when_questions)
from stream.synth import Event, SynthWorld


@dataclass
class SynthClip(Clip):
    attributes: torch.Tensor  # [T, A] multi-hot of the (colour, shape) pairs in view at each frame
    events: torch.Tensor  # [T, E] multi-hot of the EVENT_KEYS that begin since the previous frame (half a second)
    objects: list[list[tuple[float, float, int]]]  # each frame's objects in view: (x, y) in [0, 1), ATTRIBUTES index


def clip_segments(tc: TrainConfig, rng: random.Random, t_end: float) -> list[tuple[float, float]]:
    """The (start, end) times of a clip's stretches of frames, in order, the last ending at `t_end`.

    One stretch of `clip_seconds`, or (up to `train.segments`) shorter ones spread over the last
    `train.history_seconds`: a live prompt shows cubes picked from minutes of memory, and an LLM
    that only ever read one contiguous 48 s does not carry its reading across such gaps."""
    k = rng.randint(1, tc.segments)
    length = tc.clip_seconds / k - 1 / FPS
    lo = max(0.0, t_end - tc.history_seconds)
    # k sorted offsets in [0, room], the stretches laid after them in turn: they never overlap, the last ends at t_end
    room = t_end - lo - k * length - (k - 1) / FPS
    offsets = sorted(rng.uniform(0, room) for _ in range(k - 1)) + [room]
    return [(lo + o + i * (length + 1 / FPS), lo + o + i * (length + 1 / FPS) + length) for i, o in enumerate(offsets)]


def stretch_on(e: Event, length: float, lo: float, hi: float, rng: random.Random) -> float | None:
    """The start, within [lo, hi], of a stretch of `length` s that shows all of e's motion at a random place
    in it; None where the bounds clamp it away from e."""
    start = min(hi, max(lo, e.t - rng.uniform(0.5, length - e.duration - 0.5)))
    return start if start <= e.t and e.t + e.duration <= start + length else None


def with_lookalike(tc: TrainConfig, world: SynthWorld, segments: list[tuple[float, float]],
                   rng: random.Random) -> list[tuple[float, float]]:
    """`segments` with the first stretch moved onto an earlier event that looks like one in the last stretch
    (the same `when_key`: "When did a red circle last enter?" cannot tell them apart but by time), where one
    fits before the second stretch; else unchanged. Live, a "when" prompt's other cubes are the selector's
    next best guesses, earlier look-alikes often among them; random stretches rarely put one in a training
    prompt."""
    if len(segments) < 2:
        return segments
    length, (a, b) = segments[0][1] - segments[0][0], segments[-1]
    keys = {when_key(e) for e in world.events_between(a, b) if e.kind in WHEN_KINDS}
    lo, latest = max(0.0, b - tc.history_seconds), segments[1][0] - 1 / FPS - length  # the first stretch's start
    alike = [e for e in world.events_between(lo, latest + length)
             if e.kind in WHEN_KINDS and when_key(e) in keys and e.duration + 1 < length]
    if not alike:
        return segments
    start = stretch_on(rng.choice(alike), length, lo, latest, rng)
    return segments if start is None else [(start, start + length), *segments[1:]]


def on_consecutive_entries(tc: TrainConfig, world: SynthWorld, segments: list[tuple[float, float]],
                           rng: random.Random) -> list[tuple[float, float]]:
    """`segments` (three or more) with the first two stretches moved onto two entries with none between them,
    too far apart for one stretch, where such a pair fits before the last stretch; else unchanged. Random
    stretches almost never show every entry of a span of minutes: live, "What entered next after ..." and "How many
    entered between ..." over minutes are read from a few cubes picked from a long memory, and training
    must show such prompts."""
    if len(segments) < 3:
        return segments
    length, lo = segments[0][1] - segments[0][0], max(0.0, segments[-1][1] - tc.history_seconds)
    room = segments[-1][0] - 1 / FPS - length  # the second stretch starts by then
    enters = [e for e in world.events_between(lo, room + length) if e.kind == "enter"]
    pairs = [(a, b) for a, b in zip(enters, enters[1:]) if b.t - a.t > length and b.t + b.duration + 1 < room + length]
    if not pairs:
        return segments
    a, b = rng.choice(pairs)
    first = stretch_on(a, length, lo, room - length - 1 / FPS, rng)
    second = None if first is None else stretch_on(b, length, first + length + 1 / FPS, room, rng)
    return segments if second is None else [(first, first + length), (second, second + length), *segments[2:]]


def on_counted_entries(tc: TrainConfig, world: SynthWorld, segments: list[tuple[float, float]],
                       rng: random.Random) -> tuple[list[tuple[float, float]], Question | None]:
    """`segments` with the stretches before the last laid on every entry that a count over a window of up to
    minutes counts (2 to 9 of them, of all objects, a colour or a shape, in at most as many groups as there
    are stretches to move; those left over are dropped), and that count question; unchanged and None where
    no window drawn fits. With random stretches nearly every training count of entries was "1", and a model
    so trained answers every count "1"."""
    if len(segments) < 2:
        return segments, None
    length, t_end = segments[0][1] - segments[0][0], segments[-1][1]
    lo, room = max(0.0, t_end - tc.history_seconds), segments[-1][0] - 1 / FPS  # the moved stretches lie in [lo, room]
    enters = [e for e in world.events_between(lo, room) if e.kind == "enter"]
    if not enters:
        return segments, None
    clear = lambda t: all(abs(e.t - t) > CLEAR_S for e in world.events_between(t - CLEAR_S - 1, t + CLEAR_S + 1) if e.kind == "enter")
    for _ in range(16):  # most draws do not fit: too few counted, or in more groups than stretches
        anchor, noun, span = rng.choice(enters), rng.choice(("all", "colour", "shape")), rng.choice(COUNT_SPANS)
        a = round(anchor.t - rng.uniform(CLEAR_S, span - CLEAR_S))
        q = count_question(world, t_end, a, a + span, noun, None if noun == "all" else getattr(anchor, noun))
        if q is None or len(q.cues) < 2 or a < lo or a + span > room or not (clear(a) and clear(a + span)):
            continue
        groups: list[list[Event]] = []
        for e in (e for e in enters if e.t in q.cues):  # entries whose motion fits in one stretch share it
            if groups and e.t + e.duration - groups[-1][0].t <= length - 1.0:
                groups[-1].append(e)
            else:
                groups.append([e])
        moved, earliest = [], lo
        for g in groups[:len(segments) - 1]:
            first, end = g[0].t, g[-1].t + g[-1].duration
            start = max(earliest, first - rng.uniform(0.5, length - (end - first) - 0.5))
            if start > first or start + length < end or start + length > room:
                break
            moved.append((start, start + length))
            earliest = start + length + 1 / FPS
        if len(moved) == len(groups):
            return [*moved, segments[-1]], q
    return segments, None


def sample_clip(cfg: Config, rng: random.Random, seed_range: tuple[int, int], worlds: dict) -> SynthClip:
    tc = cfg.train
    while True:
        seed = rng.randrange(*seed_range)
        world = worlds.setdefault(seed, SynthWorld(seed=seed, width=cfg.vision.image_size, height=cfg.vision.image_size))
        t_end = rng.uniform(tc.clip_seconds, tc.world_seconds)
        segments = clip_segments(tc, rng, t_end)
        # half of the clips in stretches show all that a count counts; of the rest, half of three-stretch
        # clips hold a long span of entries, or else an earlier look-alike
        counted = None
        if len(segments) > 1 and rng.random() < 0.5:
            segments, counted = on_counted_entries(tc, world, segments, rng)
        if counted is None and len(segments) > 2 and rng.random() < 0.5:
            segments = on_consecutive_entries(tc, world, segments, rng)
        elif counted is None:
            segments = with_lookalike(tc, world, segments, rng)
        times = [t for a, b in segments for t in np.arange(a, b + 1e-6, 1 / FPS).tolist()]
        # what a live stream's temporal state has seen before the clip's first frame; before the world's
        # start, its first frame held, as a live stream's scan is primed (`CubeEncoder.primed_state`)
        warm = [max(0.0, times[0] - k / FPS) for k in range(int(tc.warmup_seconds * FPS), 0, -1)]
        n = len(times)
        qs = make_questions(world, t_end, rng, n=tc.questions_per_clip, max_age=t_end - segments[0][0], shown=segments)
        qs += [counted] if counted is not None and counted.text not in {q.text for q in qs} else []
        if qs:
            break
    if len(worlds) > 64:  # worlds keep their logs; bound what a long run holds
        worlds.pop(next(iter(worlds)))
    b, events = torch.zeros(n), torch.zeros(n, len(EVENT_KEYS))
    for e in world.events_between(times[0], times[-1] + 1e-6):
        i = int(np.searchsorted(times, e.t))  # first frame at or after the event
        if 0 < i < n:
            b[i] = 1.0
            if e.kind in WHEN_KINDS and times[i] - e.t <= 1 / FPS:  # not one that began in a gap between stretches
                events[i, EVENT_KEYS.index(when_key(e))] = 1.0
    frames = torch.as_tensor(np.stack([world.frame_at(t) for t in warm + times]))
    attrs, objects = torch.zeros(n, len(ATTRIBUTES)), []
    for i, t in enumerate(times):
        in_view = [(o.x, o.y, ATTRIBUTES.index((o.colour, o.shape))) for o in world.objects_at(t)]
        for _, _, a in in_view:
            attrs[i, a] = 1.0
        objects.append([(x, y, a) for x, y, a in in_view if 0 <= x < 1 and 0 <= y < 1])
    when_shown, when_unshown = when_rows(world, t_end, segments, rng)
    return SynthClip(frames=frames[len(warm):], warmup=frames[:len(warm)], times=times, questions=qs, when_shown=when_shown, when_unshown=when_unshown, boundaries=b, attributes=attrs, events=events,
                objects=objects)


def when_rows(world: SynthWorld, t_end: float, segments: list[tuple[float, float]],
              rng: random.Random) -> tuple[list[Question], list[Question]]:
    """The "when" questions (one per description, about its latest event) a clip of `segments` answers by
    pointing: those whose event it shows whole, and those about descriptions of which it shows no event,
    answered "none", in random order but those of a kind it shows first ("When did a red bar last leave?" where a blue circle
    leaves). Asked only a few questions a clip, a pointer answered "when did a ... last leave?" by the
    latest leave whoever left (its scores did not depend on the object named); pointing at one leave of several and at none of another's is taught only by such rows.
    Left out: an earlier look-alike shown but the latest not, which nothing in the prompt tells apart."""
    inside = lambda t0, t1: any(a <= t0 and t1 <= b + 1 / FPS for a, b in segments)
    begun = [e for a, b in segments for e in world.events_between(a, b + 1 / FPS) if e.kind in WHEN_KINDS]
    keys, kinds = {when_key(e) for e in begun}, {e.kind for e in begun}
    shown, unshown = [], []
    for q in when_questions(world, t_end):
        e = next(e for e in world.events_between(q.answer_time, q.answer_time + 1e-6) if e.kind in WHEN_KINDS)
        if inside(*q.evidence_time):
            shown.append(q)
        elif when_key(e) not in keys:
            unshown.append((e.kind not in kinds, rng.random(), q))
    return shown, [q for *_, q in sorted(unshown, key=lambda x: x[:2])]


def tokenizer_corpus(cfg: Config, n_worlds: int = 60) -> list[str]:
    """Every word the world's questions and answers use, and the prompt's own words."""
    rng = random.Random(cfg.seed)
    texts = [time_text(0.0), "question : answer :"]
    for seed in range(n_worlds):
        world = SynthWorld(seed=seed)
        for t_now in (30.0, 200.0, 900.0, 3000.0):
            texts += [x for q in make_questions(world, t_now, rng, n=24) for x in (q.text, q.answer)]
    return texts

