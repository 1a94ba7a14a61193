"""`cubestream train`: the whole model, end to end, on clips of the synthetic camera world.

Each step draws clips (a world seed, an end time), encodes each clip with the parallel form of the
streaming model (the same causal cubing rule that runs live, with annealed Gumbel noise), puts every
cube in the prompt with its timestamp, and asks questions generated from the world's log about that
clip. Losses: the answers' cross-entropy (a "when" answer is POINTER) and the pointer's choice of the
cubes each answer rests on (or of none, in windows without them); a rate term holding the mean cube length at its target; Quicksviewer's
0.001 * mean |z|; and, since the world knows its truth, supervised terms: where events begin (the
boundary head, `train.boundary_weight`; 0 gives Quicksviewer's unsupervised recipe), what each cube
shows (a training-only probe, `train.attribute_weight`: the objects in view at its end and the events
that begin in it, told apart from the other events of their kind), and which object is centred in each
region of each frame (a dense training-only probe on the frame tokens, `train.region_weight`).

Each clip's temporal scan starts from the state after the `train.warmup_seconds` before it (no gradient), as a
live stream's has seen what came before; later stretches of a clip continue from the stretch before.

Deterministic from `seed`; `--resume` continues from the last checkpoint with the same random streams.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from configs import Config, TrainConfig
from models.answerer import named_span, priority, select_cubes
from models.checkpoint import load_model, save_checkpoint
from models.cube_encoder import CubeEncoder
from models.evaluate import stream_world
from models.event_locator import ATTRIBUTES, EVENT_KEYS, EventLocator, LocatorEnsemble
from models.llm import POINTER, CubeLLM, build_tokenizer, time_text
from models.mamba import MambaState
from models.sequence_reader import (COLOURS, READINGS, SHAPE_NOUN, SequenceReader, count_distribution, count_span, entry_at,
                                    first_logit)
from models.stream_encoder import StreamEncoder
from stream.memory import RollingMemory
from stream.questions import (CLEAR_S, COUNT_SPANS, WHEN_KINDS, WHEN_TOLERANCE_S, Question, count_question, is_correct,
                              make_questions, when_key, when_questions)
from stream.synth import SHAPES, Event, SynthWorld

FPS = 2.0  # the sampler's default rate: what the model sees live
MIN_SHOWN = 4  # the fewest cubes a training prompt shows
# Most regions of a frame are empty: at full weight "nothing here" dominated the region probe's loss and the
# tower never told shapes apart (26% of object regions' shapes right in the shipped ft4, chance 20%).
EMPTY_REGION_WEIGHT = 0.2
# About 2 of the 30 (colour, shape) pairs are in view at once: unweighted, the attribute probe learnt to call
# every pair absent (recall 0.02 in ft4) and taught the cube tokens nothing. Weighting the present ones by
# the odds against them makes both kinds of mistake cost alike.
ATTRIBUTE_POS_WEIGHT = 14.0
# A cube begins about 0.13 of the 66 (the world has 0.04 such events a second; a cube is ~3.5 s): unweighted,
# calling every event absent is nearly free. 60, well under the odds against (~500), was chosen, not tuned.
EVENT_POS_WEIGHT = 60.0
PROBES = "probes.safetensors"  # beside a checkpoint: its fitted training-only probes, for a fine-tune to start from
PROBE_FIT_LR = 1e-2  # linear heads on frozen features: a few hundred Adam steps at this rate fit them


@dataclass
class Clip:
    frames: torch.Tensor  # uint8 [T, H, W, 3]
    warmup: torch.Tensor  # uint8 [N, H, W, 3]: the frames before the first (train.warmup_seconds), which the scan starts after
    times: list[float]
    questions: list[Question]
    when_shown: list[Question]  # "when" questions whose event the clip shows: the pointer picks its cube ...
    when_unshown: list[Question]  # ... and those about a description of which it shows no event: "none"
    boundaries: torch.Tensor  # [T] 1.0 where an event begins since the previous frame
    attributes: torch.Tensor  # [T, A] multi-hot of the (colour, shape) pairs in view at each frame
    events: torch.Tensor  # [T, E] multi-hot of the EVENT_KEYS that begin since the previous frame (half a second)
    objects: list[list[tuple[float, float, int]]]  # each frame's objects in view: (x, y) in [0, 1), ATTRIBUTES index


def region_targets(clip: Clip, grid: int) -> torch.Tensor:
    """[T, grid^2] long: 1 + the ATTRIBUTES index of the object centred in each region of the frame tokens'
    row-major grid (the vision tower's, which a pretrained tower decides), 0 none."""
    regions = torch.zeros(len(clip.objects), grid * grid, dtype=torch.long)
    for i, frame in enumerate(clip.objects):
        for x, y, a in frame:
            regions[i, int(y * grid) * grid + int(x * grid)] = 1 + a
    return regions


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
    next best guesses, earlier look-alikes among them (9 of 24 long-stream "when" questions); random
    stretches put one in a training prompt for 16 of 302."""
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
    stretches almost never show every entry of a span of minutes (7 of 1053 training questions had evidence
    over 48 s long; 19-23 of 1053-1139 with this): live, "What entered next after ..." and "How many
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
    no window drawn fits. With random stretches 175 of 221 training counts of entries were "1" (18 "2", 1
    "3"), and the shipped ft13 answered every count of entries on test worlds 11000-11011 "1" (true for 19
    of 38)."""
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


def sample_clip(cfg: Config, rng: random.Random, seed_range: tuple[int, int], worlds: dict) -> Clip:
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
    return Clip(frames=frames[len(warm):], warmup=frames[:len(warm)], times=times, questions=qs, when_shown=when_shown, when_unshown=when_unshown, boundaries=b, attributes=attrs, events=events,
                objects=objects)


def when_rows(world: SynthWorld, t_end: float, segments: list[tuple[float, float]],
              rng: random.Random) -> tuple[list[Question], list[Question]]:
    """The "when" questions (one per description, about its latest event) a clip of `segments` answers by
    pointing: those whose event it shows whole, and those about descriptions of which it shows no event,
    answered "none", in random order but those of a kind it shows first ("When did a red bar last leave?" where a blue circle
    leaves). Asked only a few questions a clip, a pointer answered "when did a ... last leave?" by the
    latest leave whoever left (its scores did not depend on the object named: test worlds 11000-11011 0 of
    15 right); pointing at one leave of several and at none of another's is taught only by such rows.
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


def warm_states(encoder: CubeEncoder, clips: list[Clip]) -> list[list[MambaState] | None]:
    """Each clip's temporal state after its warm-up frames (None with `train.warmup_seconds` 0), in one
    batch: every clip carries the same number. A clip scanned from zeros is not what runs live, where the
    state has seen the stream so far: the shipped ft13 answered 82% of held-out clips' questions from zeros
    and 79% from the state after the 30 s or 300 s before (24 clips, the same questions)."""
    if not clips or not len(clips[0].warmup):
        return [None] * len(clips)
    return encoder.temporal_state(torch.stack([c.warmup for c in clips]))


def clip_cubes(encoder: CubeEncoder, clip: Clip, noise: float, state: list[MambaState] | None = None):
    out = encoder.encode_clip(clip.frames, noise=noise, state=state)
    cubes = [(clip.times[s], clip.times[s + n - 1], tok) for s, n, tok in zip(out.starts, out.lengths, out.tokens)]
    return out, cubes


def tokenizer_corpus(cfg: Config, n_worlds: int = 60) -> list[str]:
    """Every word the world's questions and answers use, and the prompt's own words."""
    rng = random.Random(cfg.seed)
    texts = [time_text(0.0), "question : answer :"]
    for seed in range(n_worlds):
        world = SynthWorld(seed=seed)
        for t_now in (30.0, 200.0, 900.0, 3000.0):
            texts += [x for q in make_questions(world, t_now, rng, n=24) for x in (q.text, q.answer)]
    return texts


def cue_cubes(q: Question, spans: list[tuple[float, float]]) -> list[int]:
    """The cubes that hold the first frame after each of the question's cues (the events its answer rests on)."""
    return sorted({i for t in q.cues for i, (a, b) in enumerate(spans) if a - 1 / FPS < t <= b})


def shown_cubes(cubes: list, q: Question, newest: int, busy: list[bool]) -> list[int]:
    """The cubes one question's prompt shows: picked by the Answerer's own rule from a random budget, with
    the evidence scored above the rest (as a good selector would), so the LLM learns on the short, gappy
    prompts it reads live rather than only on whole clips. Next come the `busy` cubes, where an event
    begins: live, a selector's next best guesses are such cubes, not quiet ones, and the LLM must tell the
    evidence from them (a pointer taught among quiet cubes picked the right one of 16 in 1 of 24). The cubes
    of its cues come before all, whatever time the question names, and the budget always fits them: an
    answer read from cubes the prompt does not show (a count shown part of what it counts; the next entry
    after one at a named time, a minute on) would teach the LLM to guess."""
    spans = [(a, b) for a, b, _ in cubes]
    t0, t1 = q.evidence_time
    evidence = torch.tensor([float(a <= t1 and b >= t0) for a, b in spans])
    scores = torch.rand(len(spans)) + torch.tensor(busy, dtype=torch.float) + 2 * evidence
    cues = cue_cubes(q, spans)
    fit = int(torch.randint(min(max(MIN_SHOWN, newest + len(cues)), len(spans)), len(spans) + 1, ()))
    return select_cubes(cues + [i for i in priority(spans, scores, named_span(q.text)) if i not in cues], fit, newest)


def answer_target(q: Question, cubes: list) -> tuple[str, list[int] | None]:
    """What the LLM learns to answer, and which shown cubes the pointer learns to pick. A time answer points
    at one: the cube whose start (the time it will write) is nearest the true time, the later on a tie. Any
    other answer's pointer targets are its cues' cubes: the same head scores every cube of the memory for
    selection, and taught on "when" alone it left out part of the evidence of 19 of 47 order questions
    on test worlds 11000-11011 (none of the 19 answered right). A question without cues (what is in view
    now) has none: None."""
    if q.answer_time is not None:
        return POINTER, [min(range(len(cubes)), key=lambda i: (abs(cubes[i][0] - q.answer_time), -i))]
    return q.answer, cue_cubes(q, [(a, b) for a, b, _ in cubes]) if q.cues else None


def absent_window(q: Question, cubes: list, longest: int) -> list[int] | None:
    """A run of MIN_SHOWN to `longest` consecutive cubes holding none that the answer rests on (its pointer
    targets and its cues' cubes), as selection's windows over a long memory mostly are; None if none fits."""
    _, targets = answer_target(q, cubes)
    if targets is None:
        return None
    edges = [-1, *sorted(set(targets) | set(cue_cubes(q, [(a, b) for a, b, _ in cubes]))), len(cubes)]
    gaps = [(a + 1, b) for a, b in zip(edges, edges[1:]) if b - a - 1 >= MIN_SHOWN]
    if not gaps:
        return None
    a, b = gaps[int(torch.randint(len(gaps), ()))]
    size = int(torch.randint(MIN_SHOWN, min(longest, b - a) + 1, ()))
    first = a + int(torch.randint(b - a - size + 1, ()))
    return list(range(first, first + size))


class CubeProbe(torch.nn.Module):
    """Training-only head: what a cube shows, read from its tokens: which (colour, shape) pairs are in view at
    its last frame, and which events (EVENT_KEYS) begin within it.

    A dense, direct signal that teaches the vision side what the world is made of, and what happens in it,
    long before the LLM has learnt to read cubes; it is not part of the shipped model.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.head = torch.nn.Linear(dim, len(ATTRIBUTES) + len(EVENT_KEYS))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [N, K, D] -> [N, A], [N, E] logits
        logits = self.head(tokens).amax(dim=1)
        return logits[:, :len(ATTRIBUTES)], logits[:, len(ATTRIBUTES):]


class RegionProbe(torch.nn.Module):
    """Training-only head: which (colour, shape) object, if any, is centred in each frame token's region.

    Cube-level signals (QA, the attribute probe) say little about shape, which the tower then never
    learns (every shape answer came out "triangle"); this dense one reaches every frame token.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.head = torch.nn.Linear(dim, 1 + len(ATTRIBUTES))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [T, P, D] -> [T, P, 1 + A] logits
        return self.head(features)


# The event keys of each kind, for a softmax over which one: (kind, [indices into EVENT_KEYS]).
EVENT_GROUPS = [(kind, [i for i, k in enumerate(EVENT_KEYS) if k[0] == kind]) for kind in WHEN_KINDS]


def which_event_loss(event_logits: torch.Tensor, begun: torch.Tensor) -> torch.Tensor:
    """For each cube where an enter (a leave, a colour change) begins, the cross-entropy of which one among
    the keys of that kind: the log-likelihood of the set that began, against every key of its kind.

    Per-key BCE was content to say "something entered" and "a red circle is in view": on the shipped
    model's live cubes of test worlds 11000-11011 the top enter key of a cube where an object entered was
    that object's for 8% of 147 enters (leaves 24% of 120, colour changes 92%), while the same probe named
    97% of the objects in view; 23 of its 32 wrong "when" answers there pointed at another event. A softmax
    makes the keys of a kind compete."""
    terms = []
    for _, keys in EVENT_GROUPS:
        logits, target = event_logits[:, keys], begun[:, keys]
        rows = target.any(1)
        if rows.any():
            logits, target = logits[rows], target[rows]
            terms.append((logits.logsumexp(1) - logits.masked_fill(target == 0, -math.inf).logsumexp(1)).mean())
    return torch.stack(terms).mean() if terms else event_logits.new_zeros(())


def probe_losses(clip: Clip, out, probe: CubeProbe | None, region_probe: RegionProbe | None) -> dict:
    """The training-only probes' losses on one encoded clip: what its cubes show, and each region's object."""
    parts = {}
    if probe is not None:
        last = [s + n - 1 for s, n in zip(out.starts, out.lengths)]
        begun = torch.stack([clip.events[s:s + n].amax(0) for s, n in zip(out.starts, out.lengths)])
        attr_logits, event_logits = probe(out.tokens)
        parts["attributes"] = F.binary_cross_entropy_with_logits(attr_logits, clip.attributes[last],
                                                                 pos_weight=torch.tensor(ATTRIBUTE_POS_WEIGHT))
        parts["events"] = F.binary_cross_entropy_with_logits(event_logits, begun, pos_weight=torch.tensor(EVENT_POS_WEIGHT))
        parts["event_objects"] = which_event_loss(event_logits, begun)
    if region_probe is not None:
        grid = math.isqrt(out.features.shape[1])
        weight = torch.tensor([EMPTY_REGION_WEIGHT] + [1.0] * len(ATTRIBUTES))
        parts["regions"] = F.cross_entropy(region_probe(out.features).flatten(0, 1), region_targets(clip, grid).flatten(), weight=weight)
    return parts


def losses(cfg: Config, encoder: CubeEncoder, llm: CubeLLM, clips: list[Clip], noise: float,
           probe: CubeProbe | None = None, region_probe: RegionProbe | None = None) -> dict:
    qa, rate, bnd, zpen, probed = [], [], [], [], {}
    for clip, state in zip(clips, warm_states(encoder, clips)):
        out, cubes = clip_cubes(encoder, clip, noise, state)
        for k, v in probe_losses(clip, out, probe, region_probe).items():
            probed.setdefault(k, []).append(v)
        busy = [bool(clip.boundaries[s:s + n].any()) for s, n in zip(out.starts, out.lengths)]
        shown = [[cubes[i] for i in shown_cubes(cubes, q, cfg.answer.newest_cubes, busy)] for q in clip.questions]
        prompts = [llm.prompt(s, q.text, now=q.asked_at) for s, q in zip(shown, clip.questions)]
        targets = [answer_target(q, s) for s, q in zip(shown, clip.questions)]
        # the pointer also learns where the answer is not: pointer-only rows (no answer to learn without evidence)
        absent = [(q, w) for q in clip.questions if (w := absent_window(q, cubes, cfg.answer.window_cubes))]
        absent = [absent[i] for i in torch.randperm(len(absent))[:cfg.train.absent_prompts].tolist()]
        prompts += [llm.prompt([cubes[i] for i in w], q.text, now=q.asked_at) for q, w in absent]
        targets += [(None, [])] * len(absent)
        # and which of its events a "when" question names, if any (when_rows): the whole clip, as a window
        n = cfg.train.when_prompts
        named = [clip.when_shown[i] for i in torch.randperm(len(clip.when_shown))[:n // 2].tolist()]
        for q in named + clip.when_unshown[:n - len(named)]:
            prompts.append(llm.prompt(cubes, q.text, now=q.asked_at))
            targets.append((None, answer_target(q, cubes)[1] if q in named else []))
        qa.append(llm.loss(prompts, [a for a, _ in targets], [i for _, i in targets]))
        z = out.cubing.logits[0, 1:]
        rate.append((out.cubing.p[0, 1:].mean() - 1.0 / cfg.cubing.trained_target_len) ** 2)
        bnd.append(F.binary_cross_entropy_with_logits(z[:, 1] - z[:, 0], clip.boundaries[1:]))
        zpen.append(z.abs().mean())
    mean = lambda xs: torch.stack(xs).mean()
    parts = {"qa": mean(qa), "rate": mean(rate), "boundary": mean(bnd), "z": mean(zpen)}
    parts["total"] = (parts["qa"] + cfg.train.rate_weight * parts["rate"] + cfg.train.boundary_weight * parts["boundary"]
                      + 0.001 * parts["z"])
    parts |= {k: mean(v) for k, v in probed.items()}
    if probe is not None:
        parts["total"] = parts["total"] + cfg.train.attribute_weight * (parts["attributes"] + parts["events"]
                                                                 + cfg.train.event_object_weight * parts["event_objects"])
    if region_probe is not None:
        parts["total"] = parts["total"] + cfg.train.region_weight * parts["regions"]
    return parts


def save_probes(path: Path, probe: CubeProbe | None, region_probe: RegionProbe | None) -> None:
    heads = {"probe": probe, "region_probe": region_probe}
    save_file({f"{name}.{k}": v.detach().contiguous() for name, m in heads.items() if m is not None
               for k, v in m.state_dict().items()}, str(path / PROBES))


def load_probes(path: Path, probe: CubeProbe | None, region_probe: RegionProbe | None) -> bool:
    """The probes saved beside the checkpoint at `path` into `probe` and `region_probe`; False unless it has
    every one of them that is not None (a run without the region probe saves none of it)."""
    if not (path / PROBES).is_file():
        return False
    tensors, found = load_file(str(path / PROBES)), True
    for name, m in (("probe", probe), ("region_probe", region_probe)):
        if m is not None and (own := {k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")}):
            m.load_state_dict(own)
        found &= m is None or bool(own)
    return found


def fit_probes(cfg: Config, encoder: CubeEncoder, probe: CubeProbe | None, region_probe: RegionProbe | None,
               rng: random.Random, worlds: dict, steps: int, progress: bool = True) -> dict:
    """Fit fresh probes to a trained model's features, the model frozen; returns the last step's losses.

    A fine-tune from a checkpoint without its probes starts them at random, and their first gradients,
    weighted as a converged model's, reshape the tower to suit random heads: from the shipped ft13 the
    total loss began at 40 (the region term 8.8, times 4) against 2.6 with fitted probes, and quick_eval at
    step 150 read 0.61 against 0.75."""
    heads = [m for m in (probe, region_probe) if m is not None]
    if not heads or steps == 0:
        return {}
    opt = torch.optim.Adam([p for m in heads for p in m.parameters()], lr=PROBE_FIT_LR)
    result = {}
    for _ in tqdm(range(steps), disable=not progress, desc="fit probes"):
        clips = [sample_clip(cfg, rng, (0, cfg.train.train_seeds), worlds) for _ in range(cfg.train.clips_per_step)]
        with torch.no_grad():
            outs = [encoder.encode_clip(c.frames, noise=0.0, state=s) for c, s in zip(clips, warm_states(encoder, clips))]
        parts: dict = {}
        for clip, out in zip(clips, outs):
            for k, v in probe_losses(clip, out, probe, region_probe).items():
                parts.setdefault(k, []).append(v)
        total = sum(torch.stack(v).mean() for v in parts.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        result = {k: torch.stack(v).mean().item() for k, v in parts.items()}
    return result


def live_memories(cfg: Config, encoder: CubeEncoder, seeds: range, seconds: float, cuts: int = 3,
                  tight_budget: int | None = None, progress: bool = True) -> list[tuple[SynthWorld, list]]:
    """What the readers are fitted on: each world of `seeds` streamed `seconds` through the live path, its
    memory (a `RollingMemory` under the profile's budget, as live) taken at `cuts` evenly spaced times; with
    `tight_budget`, each cut's memory under that budget too where it merges there: a stream longer than the
    fit's worlds merges at the profile's budget, and merged entries (the mean of their cubes) read otherwise."""
    out = []
    for seed in tqdm(seeds, disable=not progress, desc="stream worlds"):
        world = SynthWorld(seed=seed, width=cfg.vision.image_size, height=cfg.vision.image_size)
        with torch.no_grad():
            cubes = stream_world(StreamEncoder(encoder.eval()), world, seconds)
        for cut in (seconds * (i + 1) / cuts for i in range(cuts)):
            for budget in (cfg.memory.token_budget, tight_budget):
                if budget is None:
                    continue
                memory = RollingMemory("eval", budget)
                for c in (c for c in cubes if c.end <= cut):
                    memory.add(c)
                if budget == cfg.memory.token_budget or any(e.level for e in memory):
                    out.append((world, memory.entries()))
    return out


def _reader_optimizer(module: torch.nn.Module, probe_lr: float) -> torch.optim.Optimizer:
    """The readers' heads at 3e-3; their copy of the probe at `probe_lr`, without decay (it starts fitted)."""
    heads = [p for name, p in module.named_parameters() if not name.startswith("probe.")]
    return torch.optim.AdamW([{"params": heads},
                              {"params": list(module.probe.parameters()), "lr": probe_lr, "weight_decay": 0.0}],
                             lr=3e-3, weight_decay=1e-4)


def fit_locator(cfg: Config, llm: CubeLLM, probe: CubeProbe, memories: list, steps: int = 3000,
                probe_lr: float = 3e-5, fits: int = 3, progress: bool = True) -> dict:
    """A fresh `LocatorEnsemble` of `fits` locators, each fitted from its own seed (cfg.seed + k) on
    `live_memories` of training worlds, everything else frozen; set as `llm.locator`. In each memory every
    "When did ... last ...?" that the log answers is asked. Each locator's probe starts as `probe` (the
    checkpoint's fitted training-only one) and is fine-tuned at `probe_lr`, as the reader's (session 21: on all
    576 "when" questions the logs of test worlds 11000-11023 answer at 900 s, 436 and 446 right in two fits
    against 409 and 437 with the probe frozen). Returns the mean over fits of the last 200 steps' losses."""
    width = llm.lm.get_input_embeddings().embedding_dim
    rows = []  # (entries' tokens, their ages, the question's embeddings, its key, the entries a right answer may start)
    with torch.no_grad():
        for world, entries in memories:
            now = entries[-1].end
            starts = torch.tensor([e.start for e in entries])
            tokens = torch.stack([e.tokens for e in entries])
            for q in when_questions(world, now):
                right = ((starts - q.answer_time).abs() <= WHEN_TOLERANCE_S).nonzero().flatten().tolist()
                if right:
                    rows.append((tokens, now - starts, llm.embed_text(q.text), EVENT_KEYS.index(q.event_key), right))
    located, final = [], []
    for k in range(fits):
        torch.manual_seed(cfg.seed + k)
        locator = EventLocator(cfg.resampler.out_dim, width)
        locator.probe.load_state_dict(probe.head.state_dict())
        opt = _reader_optimizer(locator, probe_lr)
        rng, losses = random.Random(cfg.seed + k), []
        for _ in tqdm(range(steps), disable=not progress, desc=f"fit locator {k + 1}/{fits}"):
            tokens, ages, question, key, right = rng.choice(rows)
            keys = locator.key_logits(question)
            scores = locator.entry_scores(locator.features(tokens, ages)) @ keys.softmax(0)  # through the probe, as it learns
            loss = scores.logsumexp(0) - scores[right].logsumexp(0) + F.cross_entropy(keys[None], torch.tensor([key]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        final.append(float(np.mean(losses[-200:])))
        located.append(locator)
    llm.locator = LocatorEnsemble(located).eval()
    return {"questions": len(rows), "loss": float(np.mean(final))}


def reading_of(q: Question) -> str:
    """The `SequenceReader` reading that answers q (the reader learns to tell it from the words)."""
    if q.kind == "present":
        return "still_there"
    if q.kind == "order":
        return "first_of" if q.options else "next_after"
    if named_span(q.text) is None:  # about what is in view now: the LLM's, but for a shape's colour
        return "colour_now" if q.kind == "colour" else "none"
    if q.kind == "count":
        noun = q.text.split()[2]  # "How many <objects | red objects | circles> entered ..."
        return "count_all" if noun == "objects" else "count_colour" if noun in COLOURS else "count_shape"
    if q.kind == "shape":
        return "shape_at"
    if q.kind == "colour":
        return "colour_turned" if " turn " in q.text else "colour_at"
    return "none"


def true_noun(q: Question) -> int:
    """The colour (count_colour) or shape (count_shape, colour_turned, colour_now) a question names, as an index, read
    from its text: the target the reader's `named_noun` learns from the words' embeddings."""
    word = q.text.split()[4] if q.kind != "count" else q.text.split()[2]  # "What colour did the <shape> turn / is the <shape>?"
    return COLOURS.index(word) if word in COLOURS else next(i for i, s in enumerate(SHAPES) if word.startswith(s))


def event_pair(world: SynthWorld, q: Question) -> int:
    """The pair (its index in ATTRIBUTES) that the enter or colour change a "what shape / colour ... at t" question
    asks about brought into view."""
    e = next(e for e in world.events_until(q.asked_at) if e.t == q.cues[0] and e.kind in ("enter", "change"))
    return ATTRIBUTES.index((e.colour, e.shape))


def pair_of(description: str) -> int:  # "red circle" -> its index in ATTRIBUTES
    return ATTRIBUTES.index(tuple(description.split()))


def fit_reader(cfg: Config, llm: CubeLLM, probe: CubeProbe, memories: list, questions: int = 90, steps: int = 15000,
               probe_lr: float = 3e-5, progress: bool = True) -> dict:
    """A fresh `SequenceReader` fitted on `live_memories` of training worlds, everything else frozen; set as
    `llm.reader`. Its probe starts as `probe` (the checkpoint's training-only one) and is fine-tuned at
    `probe_lr`, a hundredth of the heads' rate: enough to sharpen what it reads of enters and colour changes
    (session 20: +8 of the eval's 414 reader questions, two seeds, with 40 worlds' memories), little enough
    not to learn the training memories by heart (1e-4 and 3e-4 with 20 worlds: loss 0.17, no better on test
    worlds). In each memory `questions` of every kind are asked (`make_questions`): those of its readings
    teach it to answer, all of them which reading a question asks for. Each step takes one question of a
    reading, the readings in turn, and one for the LLM. Returns the number of questions of each reading and the
    mean of the last 300 steps' losses."""
    torch.manual_seed(cfg.seed)
    llm.reader = reader = SequenceReader(cfg.resampler.out_dim, llm.lm.get_input_embeddings().embedding_dim)
    reader.probe.load_state_dict(probe.head.state_dict())
    rng = random.Random(cfg.seed)
    rows: dict[str, list[dict]] = {r: [] for r in READINGS}
    with torch.no_grad():
        for world, entries in memories:
            tokens = torch.stack([e.tokens for e in entries])
            spans = [(e.start, e.end) for e in entries]
            for q in make_questions(world, entries[-1].end, rng, n=questions):
                row = {"text": llm.embed_words(q.text)}
                if (reading := reading_of(q)) != "none":
                    row["tokens"] = tokens
                if (named := named_span(q.text)) is not None:
                    row["j"] = entry_at([a for a, _ in spans], named[0])
                if reading == "first_of":
                    row |= {"pairs": [pair_of(o) for o in q.options], "options": [llm.embed_words(o) for o in q.options],
                            "target": float(q.answer == q.options[0])}
                elif reading in ("next_after", "still_there"):
                    row |= {"pair": ATTRIBUTES.index(q.event_key[1:]),
                            "target": pair_of(q.answer) if reading == "next_after" else float(q.answer == "yes")}
                    if row["target"] == row["pair"] and reading == "next_after":
                        continue  # one alike entered next: the reading masks the named pair's enter, so cannot say it
                elif reading in ("shape_at", "colour_at", "colour_turned"):
                    row |= {"target": event_pair(world, q)}
                elif reading == "colour_now":
                    row |= {"target": COLOURS.index(q.answer)}
                elif reading != "none":  # the counts: which pairs count is taught on the true ones
                    row |= {"spans": spans, "span": count_span(named, spans), "target": int(q.answer)}
                if reading in ("count_colour", *SHAPE_NOUN):
                    row["noun"] = true_noun(q)
                if reading.startswith("count"):
                    row["pairs"] = SequenceReader.counted_pairs(reading, row.get("noun"))
                rows[reading].append(row)
    opt = _reader_optimizer(reader, probe_lr)
    ce = lambda logits, i: F.cross_entropy(logits[None], torch.tensor([i]))  # noqa: E731
    losses = []
    for step in tqdm(range(steps), disable=not progress, desc="fit reader"):
        reading = READINGS[1 + step % (len(READINGS) - 1)]
        if not rows[reading]:
            continue
        r = rng.choice(rows[reading])
        r = {**r, "logits": reader.logits(r["tokens"])}  # through the probe, as it learns
        if reading == "first_of":  # the true pairs read; the pair head learns them from the options' words
            loss = F.binary_cross_entropy_with_logits(first_logit(reader.enter_chances(r["logits"], r["j"]), *r["pairs"]),
                                                      torch.tensor(r["target"]))
            loss = loss + sum(ce(reader.pair_logits(o), p) for o, p in zip(r["options"], r["pairs"])) / 2
        elif reading in ("next_after", "still_there"):
            if reading == "next_after":
                loss = -torch.log(reader.next_after(r["logits"], r["j"], r["pair"]).sum(0)[r["target"]] + 1e-9)
            else:
                seen = min(r["j"] + 1, len(r["logits"]) - 1)
                loss = F.binary_cross_entropy_with_logits(reader.still_there(r["logits"], seen, r["pair"]),
                                                          torch.tensor(r["target"]))
            loss = loss + ce(reader.pair_logits(r["text"]), r["pair"])
        elif reading in ("shape_at", "colour_at", "colour_turned"):
            loss = ce(reader.event_at(r["logits"], r["j"]), r["target"])
        elif reading == "colour_now":  # the probe's logits: only its copy learns, at its small rate
            loss = ce(reader.colour_now(r["logits"], r["noun"]), r["target"])
        else:
            _, p = reader.count_chances(r["logits"], r["spans"], *r["span"], r["pairs"])
            loss = -torch.log(count_distribution(p)[r["target"]] + 1e-6)
        if reading == "count_colour":
            loss = loss + ce(reader.colour_logits(r["text"]), r["noun"])
        elif reading in SHAPE_NOUN:
            loss = loss + ce(reader.shape_logits(r["text"]), r["noun"])
        loss = (loss + ce(reader.reading_logits(r["text"]), READINGS.index(reading))
                + ce(reader.reading_logits(rng.choice(rows["none"])["text"]), 0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    reader.eval()
    return {"questions": {r: len(v) for r, v in rows.items()}, "loss": float(np.mean(losses[-300:]))}


@torch.no_grad()
def quick_eval(cfg: Config, encoder: CubeEncoder, llm: CubeLLM, n_clips: int = 20) -> float:
    """QA accuracy on clips of held-out worlds (all cubes in the prompt, greedy answers)."""
    encoder.eval(), llm.eval()
    rng = random.Random(12345)
    right = total = 0
    for _ in range(n_clips):
        clip = sample_clip(cfg, rng, (cfg.train.train_seeds, cfg.train.train_seeds + 500), {})
        _, cubes = clip_cubes(encoder, clip, 0.0, *warm_states(encoder, [clip]))
        for q in clip.questions:
            text, _ = llm.generate(llm.prompt(cubes, q.text, now=q.asked_at), cfg.answer.max_answer_tokens)
            right += is_correct(q, text)
            total += 1
    encoder.train(), llm.train()
    return right / max(total, 1)


def noise_weight(cfg: Config, step: int) -> float:
    """Quicksviewer: cosine-annealed from 1.0 to 0.01 over the first `noise_anneal` of training."""
    frac = min(1.0, step / max(1, cfg.train.noise_anneal * cfg.train.steps))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac))


def train(cfg: Config, out_dir: str | Path, resume: bool = False, steps: int | None = None,
          progress: bool = True, init: str | Path | None = None) -> dict:
    """Train `cfg` into `out_dir` (checkpoint + train_state.pt); returns the last step's losses and eval.

    `init`: start from that checkpoint's weights (and tokenizer) with a fresh optimizer: fine-tuning.
    """
    out_dir = Path(out_dir)
    tc = cfg.train
    steps = steps or tc.steps
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    state_path = out_dir / "train_state.pt"
    if resume and state_path.is_file():
        encoder, llm = load_model(cfg, out_dir)
        state = torch.load(state_path, weights_only=False)
    elif init:
        (encoder, llm), state = load_model(cfg, init), None
    else:
        tokenizer = None if cfg.llm.pretrained else build_tokenizer(tokenizer_corpus(cfg))  # a pretrained LLM's own
        encoder, llm, state = CubeEncoder(cfg), CubeLLM(cfg, tokenizer=tokenizer), None
    probe = CubeProbe(cfg.resampler.out_dim) if tc.attribute_weight > 0 else None
    if probe is not None and state and state.get("probe"):
        probe.load_state_dict(state["probe"])
    region_probe = RegionProbe(encoder.dim) if tc.region_weight > 0 else None
    if region_probe is not None and state and state.get("region_probe"):
        region_probe.load_state_dict(state["region_probe"])
    worlds: dict = {}
    if init and not state and not load_probes(Path(init), probe, region_probe):
        fitted = fit_probes(cfg, encoder, probe, region_probe, rng, worlds, tc.probe_fit_steps, progress)
        if fitted and progress:
            tqdm.write("probes fitted: " + " ".join(f"{k} {v:.3f}" for k, v in fitted.items()))
    encoder.train(), llm.train()
    for name in tc.freeze:
        (llm if name == "llm" else getattr(encoder, name)).requires_grad_(False)
    params = [p for m in (encoder, llm, probe, region_probe) if m is not None for p in m.parameters() if p.requires_grad]
    partly = {id(p) for p in llm.partly_trained}  # weight decay would shrink their frozen rows
    groups = [{"params": [p for p in params if id(p) not in partly]}]
    groups += [{"params": llm.partly_trained, "weight_decay": 0.0}] if partly else []
    opt = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    start = 0
    if state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]

    def save(step):
        save_checkpoint(out_dir, encoder, llm)
        save_probes(out_dir, probe, region_probe)
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "probe": probe.state_dict() if probe is not None else None,
                    "region_probe": region_probe.state_dict() if region_probe is not None else None,
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "best": best}, state_path)

    best = state["best"] if state else -1.0
    began = time.monotonic()
    result = {}
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc="train")
    for step in bar:
        clips = [sample_clip(cfg, rng, (0, tc.train_seeds), worlds) for _ in range(tc.clips_per_step)]
        parts = losses(cfg, encoder, llm, clips, noise_weight(cfg, step), probe, region_probe)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        result = {k: v.item() for k, v in parts.items()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in result.items()})
        done = step + 1
        out_of_time = (time.monotonic() - began) / 60 > tc.max_minutes
        if done % tc.eval_every == 0 or done == steps or out_of_time:
            result["eval_qa"] = quick_eval(cfg, encoder, llm)
            bar.write(f"step {done}: " + " ".join(f"{k} {v:.3f}" for k, v in result.items()))
            if result["eval_qa"] > best:  # held-out accuracy is noisy and can fall late: keep the best weights too
                best = result["eval_qa"]
                save_checkpoint(out_dir / "best", encoder, llm)
                save_probes(out_dir / "best", probe, region_probe)
        if done % tc.save_every == 0 or done == steps or out_of_time:
            save(done)
        if out_of_time:
            # lr and Gumbel noise follow the step schedule: a run cut by time stops before they have come down
            bar.write(f"stopping at step {done} of {steps}: train.max_minutes ({tc.max_minutes}) reached, with the "
                      f"learning rate at {sched.get_last_lr()[0] / tc.lr:.0%} of its peak and the Gumbel noise at "
                      f"{noise_weight(cfg, done):.2f} (0.01 at the schedule's end); `--resume` finishes the schedule, "
                      f"or set train.steps to what fits")
            break
    result["step"] = done if steps > start else start
    return result
