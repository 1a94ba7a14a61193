"""SynthWorld: determinism, frames, the log against the picture, and parameter checks."""
import collections

import numpy as np
import pytest

from stream.synth import COLOURS, EVENT_KINDS, MIN_GAP_S, SHAPES, SIZES, SynthWorld

HOUR = 3600.0


def replay(events, t, still_only=True):
    """What the log says is in view at t: {obj: (shape, colour, x, y)}, independent of SynthWorld.

    With `still_only`, objects mid-slide (entering or leaving) or mid-move are left out: their position
    lies in between; without, only those sliding in or out are (half in view, they count as neither)."""
    state, busy = {}, set()
    for e in events:
        if e.t > t:
            break
        if e.kind == "enter":
            state[e.obj] = [e.shape, e.colour, e.x, e.y]
        elif e.kind == "change":
            state[e.obj][1] = e.colour
        elif e.kind in ("move", "stop"):
            state[e.obj][2] = e.x
        elif e.kind == "leave":
            del state[e.obj]
        in_motion = e.kind in (("enter", "move", "leave") if still_only else ("enter", "leave")) and t < e.t + e.duration
        (busy.add if in_motion else busy.discard)(e.obj)
    return {k: tuple(v) for k, v in state.items() if k not in busy}


def nearest_colour(rgb):
    return min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c], float) - rgb).sum())


def test_same_seed_same_world_whatever_the_query_order():
    a, b = SynthWorld(7), SynthWorld(7)
    b.frame_at(5000.0)  # b generates its log far ahead first; a extends chunk by chunk
    ts = [0.0, 12.3, 333.3, 1200.0, 4999.5]
    for t in ts:
        assert np.array_equal(a.frame_at(t), b.frame_at(t))
    assert a.events_until(5000.0) == b.events_until(5000.0)
    assert np.array_equal(a.frame_at(12.3), SynthWorld(7).frame_at(12.3))


def test_different_seed_different_world():
    a, b = SynthWorld(1), SynthWorld(2)
    assert a.events_until(HOUR) != b.events_until(HOUR)
    assert not np.array_equal(a.frame_at(100.0), b.frame_at(100.0))


def test_log_does_not_depend_on_rendering_parameters():
    # The demo's 320x240 view and the model's 64x64 view of one seed show the same events.
    base = SynthWorld(3).events_until(HOUR)
    assert SynthWorld(3, width=320, height=240, noise=0.0, drift=0.0).events_until(HOUR) == base
    assert SynthWorld(3, burst_gap=1.0).events_until(HOUR) != base


@pytest.mark.parametrize("w,h", [(64, 64), (320, 240), (48, 96)])
def test_frames_are_uint8_rgb_of_the_asked_size(w, h):
    f = SynthWorld(0, width=w, height=h).frame_at(42.0)
    assert f.dtype == np.uint8 and f.shape == (h, w, 3)
    assert f.std() > 0  # not a blank frame


def test_log_invariants_over_a_day():
    world = SynthWorld(5)
    events = world.events_until(24 * HOUR)
    times = [e.t for e in events]
    assert times == sorted(times) and np.diff(times).min() >= MIN_GAP_S - 1e-9
    assert {e.kind for e in events} == set(EVENT_KINDS)
    life = collections.defaultdict(list)
    for e in events:
        assert e.shape in SHAPES and e.colour in COLOURS and e.size in SIZES
        life[e.obj].append(e)
    in_view = 0
    for e in events:  # never more objects than lanes
        in_view += {"enter": 1, "leave": -1}.get(e.kind, 0)
        assert 0 <= in_view <= world.params.lanes
    for obj, evs in life.items():
        kinds = [e.kind for e in evs]
        assert kinds[0] == "enter" and kinds.count("enter") == 1 and "leave" not in kinds[:-1]
        assert len({(e.shape, e.size) for e in evs}) == 1
        for a, b in zip(evs, evs[1:]):
            if a.kind == "move":  # every move ends in a stop where the move said
                assert b.kind == "stop" and b.t == pytest.approx(a.t + a.duration) and b.x == a.x
            if b.kind == "change":
                assert b.prev_colour == a.colour != b.colour


def test_activity_is_uneven_and_density_is_controllable():
    times = [e.t for e in SynthWorld(0).events_until(6 * HOUR)]
    per_minute = np.histogram(times, bins=np.arange(0, 6 * HOUR + 1, 60))[0]
    assert (per_minute == 0).mean() > 0.2  # long quiet stretches...
    assert per_minute.max() >= 8  # ...and bursts
    busy = SynthWorld(0, quiet_mean=20.0, burst_mean=120.0).events_until(6 * HOUR)
    assert len(busy) > 1.5 * len(times)


def test_objects_in_the_log_are_visible_in_the_frame():
    # Noise and drift off: a pixel is exactly its object's colour or the background.
    world = SynthWorld(11, noise=0.0, drift=0.0)
    events = world.events_until(2 * HOUR)
    checked = 0
    for t in np.arange(5.0, 2 * HOUR, 17.0):
        frame = world.frame_at(float(t))
        truth = replay(events, t)
        for shape, colour, x, y in truth.values():
            assert tuple(frame[int(y * 64), int(x * 64)]) == COLOURS[colour]
            checked += 1
        assert {(o.shape, o.colour) for o in world.objects_at(float(t)) if not o.moving} == \
            {(s, c) for s, c, _, _ in truth.values()}
    assert checked > 300
    # After an object has left, its last place shows the grey background again.
    gone = 0
    for e in [e for e in events if e.kind == "leave"][:20]:
        t = e.t + e.duration + 0.5
        if not any(o.y == e.y for o in world.objects_at(t)):  # its lane is empty again
            before, after = world.frame_at(e.t - 0.1)[int(e.y * 64), int(e.x * 64)], world.frame_at(t)[int(e.y * 64), int(e.x * 64)]
            assert tuple(before) == COLOURS[e.colour]
            assert int(after.max()) - int(after.min()) < 20 and after.max() < 120
            gone += 1
    assert gone > 10


def test_colours_recognizable_under_noise_and_drift():
    world = SynthWorld(4, width=320, height=240)  # also checks rendering scales with the frame
    events = world.events_until(HOUR)
    checked = 0
    for t in np.arange(3.0, HOUR, 29.0):
        frame = world.frame_at(float(t)).astype(float)
        for shape, colour, x, y in replay(events, t).values():
            cy, cx = int(y * 240), int(x * 320)
            patch = frame[cy - 2: cy + 3, cx - 2: cx + 3].reshape(-1, 3).mean(0)  # average out the noise
            assert nearest_colour(patch / world.gain(float(t))) == colour
            checked += 1
    assert checked > 50


def test_boundary_times_are_the_event_starts():
    world = SynthWorld(2)
    bounds = world.boundary_times(600.0, 1800.0)
    starts = [e.t for e in world.events_until(1800.0) if 600.0 <= e.t < 1800.0]
    assert bounds == starts and len(bounds) > 10


@pytest.mark.parametrize("kwargs,match", [
    (dict(width=16), "at least 32x32"),
    (dict(lanes=5), "lanes"),
    (dict(lanes=0), "lanes"),
    (dict(shapes=("hexagon",)), "unknown shapes"),
    (dict(colours=("red",)), "colours"),
    (dict(colours=("red", "red")), "distinct"),
    (dict(quiet_mean=0), "quiet_mean"),
    (dict(burst_gap=1e9), "burst_gap"),
    (dict(noise=-1), "noise"),
    (dict(drift=0.7), "drift"),
    (dict(fps=2), "unknown parameter"),
    (dict(seed=-1), "seed"),
    (dict(width=64.0), "width must be an int"),
])
def test_bad_parameters_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SynthWorld(**kwargs)


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf")])
def test_bad_times_are_errors(t):
    with pytest.raises(ValueError, match="stream time"):
        SynthWorld(0).frame_at(t)
