"""StreamEncoder: frame-by-frame == whole clip, snapshots, batching, and bad input leaving state untouched."""
import math

import numpy as np
import pytest
import torch

from configs import load_config
from models import CubeEncoder, StreamEncoder, StreamInputError
from stream import codec


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = load_config(overrides={"cubing": {"min_len": 2, "max_len": 8, "target_len": 3, "trained_target_len": 3}})
    return CubeEncoder(cfg).eval()


def clip(seed, T=48, size=(64, 64)):
    """Frames with still stretches and jumps, so that the cubing has something to find."""
    rng = np.random.default_rng(seed)
    frames, cur = [], rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    for _ in range(T):
        if rng.random() < 0.3:
            cur = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        frames.append(np.clip(cur.astype(int) + rng.integers(-3, 4, cur.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def feed(enc, sid, frames, t0=0.0, dt=0.5):
    cubes = []
    for i, f in enumerate(frames):
        cubes += enc.push([sid], [f], [t0 + i * dt])
    return cubes


def assert_same_cubes(a, b):
    assert [(c.index, c.start, c.end, c.num_frames) for c in a] == [(c.index, c.start, c.end, c.num_frames) for c in b]
    for x, y in zip(a, b):
        assert (x.tokens - y.tokens).abs().max() <= 1e-5
        assert math.isclose(x.score, y.score, abs_tol=1e-5)


def test_frame_by_frame_equals_whole_clip(model):
    frames = clip(0)
    enc = StreamEncoder(model)
    enc.add_stream("cam")
    cubes = feed(enc, "cam", frames) + [enc.flush("cam")]
    with torch.no_grad():
        whole = model.encode_clip(torch.as_tensor(frames), state=model.primed_state(torch.as_tensor(frames[0])))
    assert len(cubes) > 3
    assert [c.num_frames for c in cubes] == whole.lengths
    assert [c.start for c in cubes] == [s * 0.5 for s in whole.starts]
    for c, tok, score in zip(cubes, whole.tokens, whole.scores):
        assert (c.tokens - tok).abs().max() <= 1e-5
        assert math.isclose(c.score, score, abs_tol=1e-5)
    assert sum(c.num_frames for c in cubes) == len(frames)


def test_frame_by_frame_equals_whole_clip_with_cubes_at_events_capped():
    """cubing.event_max_len: the live path caps the cubes the head opened as the training form does, and marks
    those cuts forced (no claim of an event) as it does the max_len ones."""
    torch.manual_seed(0)
    cfg = load_config(overrides={"cubing": {"min_len": 1, "max_len": 8, "event_max_len": 2, "target_len": 3,
                                            "trained_target_len": 3}})
    model = CubeEncoder(cfg).eval()
    frames = clip(0, T=96)
    enc = StreamEncoder(model)
    enc.add_stream("cam")
    cubes = feed(enc, "cam", frames)
    with torch.no_grad():
        whole = model.encode_clip(torch.as_tensor(frames), state=model.primed_state(torch.as_tensor(frames[0])))
    assert [c.num_frames for c in cubes] == whole.lengths[:len(cubes)]
    forced = whole.cubing.forced[0]
    assert [c.forced for c in cubes] == [bool(forced[s]) for s in whole.starts[1:len(cubes) + 1]]
    opened_by_head = [not prev.forced for prev in cubes[:-1]]  # of cubes[1:]
    assert any(opened_by_head) and max(c.num_frames for c, h in zip(cubes[1:], opened_by_head) if h) == 2
    assert max(c.num_frames for c in cubes) > 2


def test_a_new_stream_starts_from_its_first_frame_held(model):
    """A stream's scan starts from the state after its first frame seen `temporal.prime_frames` times (as a
    training clip's starts after seconds of history), not from zeros; 0 primes nothing."""
    frames = torch.as_tensor(clip(5, T=24))
    n = model.cfg.temporal.prime_frames
    with torch.no_grad():
        held = model.temporal_state(frames[:1].expand(n, -1, -1, -1)[None])[0]
        primed, zeros = model.encode_clip(frames, state=held), model.encode_clip(frames)
    enc = StreamEncoder(model)
    enc.add_stream("cam")
    cubes = feed(enc, "cam", frames.numpy()) + [enc.flush("cam")]
    assert n > 0 and len(cubes) == len(primed.tokens)
    assert max((c.tokens - t).abs().max() for c, t in zip(cubes, primed.tokens)) <= 1e-5
    assert (primed.features - zeros.features).abs().max() > 1e-2

    unprimed = CubeEncoder(load_config(overrides={"temporal": {"prime_frames": 0}})).eval()
    unprimed.load_state_dict(model.state_dict())
    assert unprimed.primed_state(frames[0]) is None
    enc = StreamEncoder(unprimed)
    enc.add_stream("cam")
    cubes = feed(enc, "cam", frames.numpy()) + [enc.flush("cam")]
    with torch.no_grad():
        whole = unprimed.encode_clip(frames)
    assert max((c.tokens - t).abs().max() for c, t in zip(cubes, whole.tokens)) <= 1e-5


def test_a_clip_continues_from_the_state_of_the_frames_before_it(model):
    """encode_clip from `temporal_state` of the frames before computes what one scan over both does; runs
    batched in temporal_state get the states each gets alone."""
    frames = torch.as_tensor(clip(4, T=40))
    with torch.no_grad():
        whole = model.encode_clip(frames)
        (state,) = model.temporal_state(frames[None, :24])
        rest, fresh = model.encode_clip(frames[24:], state=state), model.encode_clip(frames[24:])
        batched = model.temporal_state(torch.stack([frames[:24], frames[16:]]))
        alone = model.temporal_state(frames[None, 16:])[0]
    assert (rest.features - whole.features[24:]).abs().max() <= 1e-5
    assert (fresh.features - whole.features[24:]).abs().max() > 1e-2  # the state carries something
    for got, want in zip(batched[0] + batched[1], state + alone):
        assert torch.allclose(got.conv, want.conv, atol=1e-6) and torch.allclose(got.ssm, want.ssm, atol=1e-6)


def test_snapshot_restored_elsewhere_gives_identical_later_cubes(model):
    frames = clip(1, T=60)
    a = StreamEncoder(model)
    a.add_stream("cam")
    feed(a, "cam", frames[:27])
    blob = codec.packb(a.get_state("cam"))
    later_a = feed(a, "cam", frames[27:], t0=27 * 0.5)

    b = StreamEncoder(CubeEncoder(model.cfg).eval())
    b.model.load_state_dict(model.state_dict())
    b.set_state("cam", codec.unpackb(blob))
    later_b = feed(b, "cam", frames[27:], t0=27 * 0.5)
    assert len(later_a) > 2
    assert_same_cubes(later_a, later_b)


def test_streams_batched_equal_each_alone(model):
    T = 40
    clips = {f"s{i}": clip(10 + i, T=T) for i in range(5)}
    alone = {}
    for sid, frames in clips.items():
        enc = StreamEncoder(model)
        enc.add_stream(sid)
        alone[sid] = feed(enc, sid, frames)

    batched = StreamEncoder(model)
    for sid in clips:
        batched.add_stream(sid)
    pos = dict.fromkeys(clips, 0)
    got = {sid: [] for sid in clips}
    step = 0
    while any(n < T for n in pos.values()):
        # a changing subset each call: streams need not move in lockstep
        sids = [s for i, s in enumerate(clips) if pos[s] < T and (step + i) % 3] or [s for s in clips if pos[s] < T]
        for c in batched.push(sids, [clips[s][pos[s]] for s in sids], [pos[s] * 0.5 for s in sids]):
            got[c.stream_id].append(c)
        for s in sids:
            pos[s] += 1
        step += 1
    for sid in clips:
        assert len(alone[sid]) > 2
        assert_same_cubes(alone[sid], got[sid])


def test_bad_input_is_refused_and_leaves_state_untouched(model):
    enc = StreamEncoder(model)
    enc.add_stream("a")
    enc.add_stream("b")
    frames = clip(3, T=6)
    feed(enc, "a", frames[:3])
    before = codec.packb(enc.get_state("a"))
    good = frames[3]
    bad_calls = [
        (["a"], [good[:, :, :2]], [5.0], "shape"),
        (["a"], [good[None]], [5.0], "shape"),
        (["a"], [good.astype(np.float32)], [5.0], "uint8"),
        (["a"], [good], [float("nan")], "finite"),
        (["a"], [good], [0.5], "does not follow"),
        (["a"], [good], [1.0], "does not follow"),  # equal to the last timestamp
        (["nope"], [good], [5.0], "unknown stream"),
        (["a", "a"], [good, good], [5.0, 6.0], "one frame per push"),
        (["a", "b"], [good], [5.0, 5.0], "stream ids"),
        (["a", "b"], [good, good[:, :, :1]], [5.0, 5.0], "shape"),  # one bad frame refuses the whole call
    ]
    for sids, fr, ts, words in bad_calls:
        with pytest.raises(ValueError, match=words):
            enc.push(sids, fr, ts)
    assert codec.packb(enc.get_state("a")) == before
    assert enc.get_state("b")["last_pts"] == -math.inf
    with pytest.raises(StreamInputError) as e:
        enc.push(["ghost"], [good], [1.0])
    assert e.value.stream_id == "ghost"
    enc.push(["a", "b"], [good, good], [5.0, 5.0])  # and the streams still work


def test_restore_refuses_a_state_of_another_model(model):
    enc = StreamEncoder(model)
    enc.add_stream("a")
    state = enc.get_state("a")
    state["temporal"][0]["ssm"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="cannot restore"):
        enc.set_state("b", state)
    assert "b" not in enc.streams


def test_flush_and_remove(model):
    enc = StreamEncoder(model)
    enc.add_stream("a")
    cubes = feed(enc, "a", clip(4, T=10))
    last = enc.remove_stream("a")
    assert last.score == 1.0 and last.index == len(cubes)
    assert sum(c.num_frames for c in cubes) + last.num_frames == 10
    assert "a" not in enc.streams
