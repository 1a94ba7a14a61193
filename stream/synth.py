"""SynthStream: a procedurally generated camera world that knows the truth about every event.

A fixed camera looks at a dim, textured scene with sensor noise and slow lighting drift. Objects (a shape,
a colour, a size) slide in from the left or right edge, sit, move along their row, stop, change colour, and
slide out. Activity alternates between quiet stretches and bursts. Everything is a pure function of the
seed and the parameters:

- `frame_at(t)` renders the view at any stream time t >= 0 (random access, so a live source can pace it
  and a dataset can sample it);
- `events_until(t)` / `events_between(t0, t1)` give the ground-truth event log, `objects_at(t)` what is in
  view, `boundary_times(t0, t1)` the event times used as true cube boundaries.

The log is generated lazily, in chunks of stream time, by one sequential random process: the draws do not
depend on how the log is queried, so a 24-hour world costs only as far as it is asked about.

Design choices that make events learnable by a tiny vision model at 64x64:
- one object per horizontal lane (at most `lanes` objects in view), so objects never overlap;
- one action at a time, each separated by at least MIN_GAP_S, so every event is a distinct visual change
  and event times are at least 1.5 s apart (boundary F1 is scored with a 1 s tolerance);
- a small palette of well-separated colours on a grey background, and objects 10-18 px across.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np

SHAPES = ("square", "circle", "triangle", "bar", "cross")
COLOURS = {  # RGB at neutral lighting; well apart from each other and from the grey background
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "white": (235, 235, 235),
    "purple": (150, 60, 200),
}
SIZES = {"small": 10, "medium": 14, "large": 18}  # side in pixels of a 64-pixel frame; scales with the frame
EVENT_KINDS = ("enter", "move", "stop", "change", "leave")

REF_SIDE = 64  # the frame side the sizes above are given for
X_MIN, X_MAX = 0.17, 0.83  # where objects rest, as a fraction of the width: a large one stays fully in view
X_OFF = 0.2  # how far beyond an edge (fraction of the width) an object starts entering or ends leaving
ENTER_S = 1.0  # seconds an object takes to slide in, and to slide out
MIN_GAP_S = 1.5  # quiet seconds after each action ends, before the next may begin
MIN_MOVE_S, MIN_MOVE_DX = 1.5, 0.2  # a move lasts at least this long and covers at least this much width
SPEED = (0.15, 0.35)  # move speeds, widths per second
STAY_S = (10.0, 900.0)  # how long an object wants to stay: log-uniform, so a few stay for many minutes
CHUNK_S = 600.0  # the log is generated this many seconds of stream time at a time

# Relative odds of the next action: entering a free lane, and for each object in view moving, changing
# colour, or leaving (leaving becomes likely once the object has stayed as long as it wanted).
W_ENTER, W_MOVE, W_CHANGE, W_LEAVE, W_LEAVE_DUE = 1.0, 0.5, 0.35, 0.1, 3.0


@dataclass
class SynthParams:
    """The world's knobs; `SynthWorld(seed, **params)` takes these by name."""
    width: int = 64
    height: int = 64
    lanes: int = 3  # horizontal rows, one object each: at most this many objects in view
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    quiet_mean: float = 120.0  # mean length (s) of a quiet stretch
    burst_mean: float = 30.0  # mean length (s) of a burst of activity
    burst_gap: float = 2.0  # mean extra seconds between actions during a burst (beyond MIN_GAP_S)
    quiet_gap: float = 120.0  # mean seconds between actions during a quiet stretch
    noise: float = 4.0  # sensor noise, standard deviation in 0-255 units
    drift: float = 0.15  # amplitude of the slow lighting drift, as a fraction of the brightness

    def __post_init__(self):
        self.shapes, self.colours = tuple(self.shapes), tuple(self.colours)
        for name in ("width", "height", "lanes"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"synth: {name} must be an int, got {getattr(self, name)!r}")
        if min(self.width, self.height) < 32:
            raise ValueError(f"synth: frame must be at least 32x32 for shapes to stay recognizable, got {self.width}x{self.height}")
        # Each lane must fit the largest object, scaled as the frame is.
        max_lanes = int(self.height / (SIZES["large"] * min(self.width, self.height) / REF_SIDE))
        if not 1 <= self.lanes <= max_lanes:
            raise ValueError(f"synth: lanes must lie in [1, {max_lanes}] for a {self.width}x{self.height} frame, got {self.lanes}")
        _subset("shapes", self.shapes, SHAPES, at_least=1)
        _subset("colours", self.colours, tuple(COLOURS), at_least=2)  # a colour change needs two
        for name in ("quiet_mean", "burst_mean", "burst_gap", "quiet_gap"):
            v = getattr(self, name)  # capped at a day: the next action is found by stepping through stretches
            if not (isinstance(v, (int, float)) and 0 < v <= 86400):
                raise ValueError(f"synth: {name} must be a number of seconds in (0, 86400], got {v!r}")
        if not 0 <= self.noise <= 64:
            raise ValueError(f"synth: noise must lie in [0, 64], got {self.noise!r}")
        if not 0 <= self.drift < 0.5:
            raise ValueError(f"synth: drift must lie in [0, 0.5), got {self.drift!r}")


@dataclass(frozen=True)
class Event:
    """One line of the ground-truth log."""
    t: float  # stream time (s) the event begins
    kind: str  # one of EVENT_KINDS
    obj: int  # object id: 0, 1, 2, ... in order of entry
    shape: str
    colour: str  # the object's colour from this event on (a change's new colour)
    size: str
    x: float  # where the object rests after the event (leave: where it left from), fraction of the width
    y: float  # its lane's centre, fraction of the height
    duration: float  # seconds the visible motion lasts (enter, move, leave); 0 for stop and change
    prev_colour: str | None = None  # change only: the colour before


@dataclass(frozen=True)
class ObjectState:
    """An object in view at some time, as the log has it."""
    obj: int
    shape: str
    colour: str
    size: str
    x: float  # centre, fraction of the width (outside [0, 1] when partly off-screen)
    y: float  # centre, fraction of the height
    moving: bool  # entering, moving or leaving at that instant


@dataclass
class _Track:
    """One object's whole life, as keyframes: position is piecewise linear, colour piecewise constant."""
    obj: int
    shape: str
    size: str
    lane: int
    stay_until: float  # after this it prefers to leave
    key_t: list[float]
    key_x: list[float]
    colour_t: list[float]
    colour: list[str]
    gone: float = math.inf  # fully out of view from here on; unknown until its leave is generated

    def x_at(self, t: float) -> tuple[float, bool]:
        i = bisect.bisect_right(self.key_t, t) - 1
        if i + 1 >= len(self.key_t):
            return self.key_x[i], False
        x0, x1 = self.key_x[i], self.key_x[i + 1]
        f = (t - self.key_t[i]) / (self.key_t[i + 1] - self.key_t[i])
        return x0 + f * (x1 - x0), x0 != x1

    def colour_at(self, t: float) -> str:
        return self.colour[bisect.bisect_right(self.colour_t, t) - 1]


class SynthWorld:
    """A camera world fixed by `seed` and SynthParams. Its log grows lazily as later times are asked
    about, so one instance is not safe to share between threads; make one per thread (they agree)."""

    def __init__(self, seed: int = 0, **params):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"synth: seed must be a non-negative int, got {seed!r}")
        known = {f.name for f in dataclasses.fields(SynthParams)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"synth: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        self.seed = seed
        self.params = p = SynthParams(**params)
        self.width, self.height = p.width, p.height

        # The event process: one random stream, consumed in time order (see _extend_to).
        self._rng = random.Random(seed)
        self._lane_now: list[_Track | None] = [None] * p.lanes
        self._lane_tracks: list[list[_Track]] = [[] for _ in range(p.lanes)]
        self._lane_enters: list[list[float]] = [[] for _ in range(p.lanes)]
        self._events: list[Event] = []
        self._event_t: list[float] = []
        self._next_obj = 0
        self._burst, self._phase_end = True, self._rng.expovariate(1 / p.burst_mean)  # open with activity
        self._next_t = self._draw_next(0.0)
        self._until = 0.0  # every action starting at or before this time is in the log

        # The picture: background texture, lighting, and object masks, all fixed by the seed.
        img_rng = np.random.default_rng((seed, 1))
        self._background = _background(img_rng, p.height, p.width)
        self._drift_period = float(img_rng.uniform(600, 1800))
        self._drift_phase = img_rng.uniform(0, 2 * math.pi, size=2)
        scale = min(p.width, p.height) / REF_SIDE
        self._masks = {(s, z): _mask(s, max(4, round(px * scale))) for s in SHAPES for z, px in SIZES.items()}
        self._palette = {c: np.array(rgb, np.float32) for c, rgb in COLOURS.items()}

    # ---- the log ----

    def events_until(self, t: float) -> list[Event]:
        """Every event that began at or before t, in time order."""
        self._extend_to(t)
        return self._events[: bisect.bisect_right(self._event_t, t)]

    def events_between(self, t0: float, t1: float) -> list[Event]:
        """Events beginning in [t0, t1), in time order."""
        self._extend_to(t1)
        return self._events[bisect.bisect_left(self._event_t, t0): bisect.bisect_left(self._event_t, t1)]

    def boundary_times(self, t0: float, t1: float) -> list[float]:
        """True cube boundaries in [t0, t1): the time each event begins (every one is a visible change)."""
        return [e.t for e in self.events_between(t0, t1)]

    def objects_at(self, t: float) -> list[ObjectState]:
        """Objects at least partly in view at time t, by lane from the top."""
        self._extend_to(t)
        out = []
        for lane in range(self.params.lanes):
            tr = self._track_at(lane, t)
            if tr is not None:
                x, moving = tr.x_at(t)
                out.append(ObjectState(tr.obj, tr.shape, tr.colour_at(t), tr.size, x, self._lane_y(lane), moving))
        return out

    # ---- the picture ----

    def frame_at(self, t: float) -> np.ndarray:
        """The camera's view at stream time t: uint8 [height, width, 3], RGB."""
        canvas = self._background.copy()
        for o in self.objects_at(t):
            self._paint(canvas, o)
        canvas *= self.gain(t)
        if self.params.noise:  # the noise of frame t is fixed by (seed, t in ms): frames are reproducible
            rng = np.random.default_rng((self.seed, 2, round(t * 1000)))
            canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(self.params.noise)
        return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)

    def gain(self, t: float) -> float:
        """Brightness multiplier of the slow lighting drift at time t (1.0 = neutral)."""
        a, ph = self.params.drift, self._drift_phase
        w = 2 * math.pi * t / self._drift_period
        return 1.0 + a * (0.7 * math.sin(w + ph[0]) + 0.3 * math.sin(w / 3.7 + ph[1]))

    def _paint(self, canvas: np.ndarray, o: ObjectState) -> None:
        mask = self._masks[(o.shape, o.size)]
        s = mask.shape[0]
        top, left = round(o.y * self.height - s / 2), round(o.x * self.width - s / 2)
        y0, y1, x0, x1 = max(top, 0), min(top + s, self.height), max(left, 0), min(left + s, self.width)
        if y0 < y1 and x0 < x1:  # clipped at the frame's edge while sliding in or out
            canvas[y0:y1, x0:x1][mask[y0 - top: y1 - top, x0 - left: x1 - left]] = self._palette[o.colour]

    def _lane_y(self, lane: int) -> float:
        return (lane + 0.5) / self.params.lanes

    def _track_at(self, lane: int, t: float) -> _Track | None:
        i = bisect.bisect_right(self._lane_enters[lane], t) - 1
        if i >= 0 and t < self._lane_tracks[lane][i].gone:
            return self._lane_tracks[lane][i]
        return None

    # ---- the event process ----

    def _extend_to(self, t: float) -> None:
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
            raise ValueError(f"synth: stream time must be a finite number >= 0, got {t!r}")
        if t <= self._until:
            return
        # Whole chunks, so cost is amortized; the result does not depend on the chunking because the
        # random draws happen in the same order however far each call extends.
        horizon = (math.floor(t / CHUNK_S) + 1) * CHUNK_S
        while self._next_t <= horizon:
            end = self._act(self._next_t)
            self._next_t = self._draw_next(end + MIN_GAP_S)
        self._until = horizon

    def _draw_next(self, now: float) -> float:
        """Time of the next action at or after `now`: bursts and quiet stretches alternate, each with its
        own (memoryless) action rate, so activity comes in clumps."""
        p, rng = self.params, self._rng
        while True:
            while self._phase_end <= now:  # stretches that ran out while the last action played
                self._burst = not self._burst
                self._phase_end += rng.expovariate(1 / (p.burst_mean if self._burst else p.quiet_mean))
            t = now + rng.expovariate(1 / (p.burst_gap if self._burst else p.quiet_gap))
            if t < self._phase_end:
                return t
            now = self._phase_end

    def _act(self, t: float) -> float:
        """Pick and log one action beginning at t; returns when its visible motion ends."""
        rng = self._rng
        free = [lane for lane, tr in enumerate(self._lane_now) if tr is None]
        options: list[tuple[float, str, _Track | None]] = [(W_ENTER, "enter", None)] if free else []
        for tr in self._lane_now:
            if tr is not None:
                options += [(W_MOVE, "move", tr), (W_CHANGE, "change", tr),
                            (W_LEAVE_DUE if t >= tr.stay_until else W_LEAVE, "leave", tr)]
        r = rng.random() * sum(w for w, _, _ in options)
        for w, kind, tr in options:
            r -= w
            if r < 0:
                break
        if kind == "enter":
            return self._enter(t, rng.choice(free))
        x, _ = tr.x_at(t)
        if kind == "move":
            while True:
                x2 = rng.uniform(X_MIN, X_MAX)
                if abs(x2 - x) >= MIN_MOVE_DX:
                    break
            d = max(MIN_MOVE_S, abs(x2 - x) / rng.uniform(*SPEED))
            tr.key_t += [t, t + d]
            tr.key_x += [x, x2]
            self._log(t, "move", tr, x2, d)
            self._log(t + d, "stop", tr, x2, 0.0)
            return t + d
        if kind == "change":
            old = tr.colour_at(t)
            new = rng.choice([c for c in self.params.colours if c != old])
            tr.colour_t.append(t)
            tr.colour.append(new)
            self._log(t, "change", tr, x, 0.0, prev_colour=old)
            return t
        # leave, through the nearer edge
        off = -X_OFF if x < 0.5 else 1 + X_OFF
        tr.key_t += [t, t + ENTER_S]
        tr.key_x += [x, off]
        tr.gone = t + ENTER_S
        self._lane_now[tr.lane] = None
        self._log(t, "leave", tr, x, ENTER_S)
        return t + ENTER_S

    def _enter(self, t: float, lane: int) -> float:
        rng, p = self._rng, self.params
        shape, colour, size = rng.choice(p.shapes), rng.choice(p.colours), rng.choice(tuple(SIZES))
        x = rng.uniform(X_MIN, X_MAX)
        start = -X_OFF if rng.random() < 0.5 else 1 + X_OFF
        stay = math.exp(rng.uniform(math.log(STAY_S[0]), math.log(STAY_S[1])))
        tr = _Track(self._next_obj, shape, size, lane, t + stay, [t, t + ENTER_S], [start, x], [t], [colour])
        self._next_obj += 1
        self._lane_now[lane] = tr
        self._lane_tracks[lane].append(tr)
        self._lane_enters[lane].append(t)
        self._log(t, "enter", tr, x, ENTER_S)
        return t + ENTER_S

    def _log(self, t: float, kind: str, tr: _Track, x: float, duration: float, prev_colour: str | None = None):
        self._events.append(Event(t, kind, tr.obj, tr.shape, tr.colour_at(t), tr.size, x, self._lane_y(tr.lane),
                                  duration, prev_colour))
        self._event_t.append(t)


def _subset(name: str, values: tuple[str, ...], allowed: tuple[str, ...], at_least: int) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"synth: unknown {name} {bad}; choose from {list(allowed)}")
    if len(set(values)) != len(values) or len(values) < at_least:
        raise ValueError(f"synth: {name} must be at least {at_least} distinct names, got {list(values)}")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dim, desaturated, smoothly varying texture (a coarse random grid, bilinearly upsampled)."""
    grid = rng.uniform(45, 95, size=(5, 5, 1)) + rng.uniform(-6, 6, size=(5, 5, 3))
    ys, xs = np.linspace(0, 4, h), np.linspace(0, 4, w)
    y0, x0 = np.minimum(ys.astype(int), 3), np.minimum(xs.astype(int), 3)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _mask(shape: str, s: int) -> np.ndarray:
    """Boolean [s, s] mask of a shape; every shape covers the centre, where tests read its colour."""
    c = (np.arange(s) + 0.5) - s / 2  # pixel centres relative to the middle
    yy, xx = c[:, None], c[None, :]
    if shape == "square":
        return np.ones((s, s), bool)
    if shape == "circle":
        return yy**2 + xx**2 <= (s / 2) ** 2
    if shape == "triangle":  # apex up, base at the bottom
        return np.abs(xx) <= (yy + s / 2) / 2
    if shape == "bar":  # a horizontal bar, 40% as thick as it is long
        return np.broadcast_to(np.abs(yy) <= max(1.0, 0.2 * s), (s, s)).copy()
    if shape == "cross":
        arm = max(1.0, s / 6)
        return (np.abs(yy) <= arm) | (np.abs(xx) <= arm)
    raise ValueError(f"synth: no mask for shape {shape!r}")
