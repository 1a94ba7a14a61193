"""Cubes without training: the change rule and the pooling, their stream and whole-clip forms, and the
VLM stream encoder over a tiny real VLM's vision side."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from configs import TemporalConfig
from models.temporal import MambaTemporalEncoder
from models.vlm import load_vlm
from models.vlm.cubes import ChangeCubing, frame_feature, pool_cube, pool_frame, pool_time
from models.vlm.stream_encoder import VLMStreamEncoder
from tiny_vlm import FAMILIES


def scene_clip(lengths, h=4, w=4, d=16, noise=0.05, seed=0) -> torch.Tensor:
    """Frame tokens of a clip made of scenes of these lengths: one random pattern a scene, plus noise."""
    g = torch.Generator().manual_seed(seed)
    frames = []
    for n in lengths:
        base = torch.randn(h, w, d, generator=g)
        frames += [base + noise * torch.randn(h, w, d, generator=g) for _ in range(n)]
    return torch.stack(frames)


def test_boundaries_fall_at_scene_changes_within_the_length_limits():
    clip = scene_clip([6, 9, 5, 7])
    cubes = ChangeCubing(min_len=2, max_len=12).clip_cubes(clip)
    starts = [a for a, _, _ in cubes]
    assert starts == [0, 6, 15, 20]


def test_max_len_cuts_a_still_scene_and_min_len_holds_a_flicker():
    cubes = ChangeCubing(min_len=1, max_len=4).clip_cubes(scene_clip([10], noise=0.0))
    assert [b - a for a, b, _ in cubes] == [4, 4, 2]
    flicker = scene_clip([4, 1, 5])  # a one-frame scene: with min_len 3 no cube is shorter
    lengths = [b - a for a, b, _ in ChangeCubing(min_len=3, max_len=12).clip_cubes(flicker)]
    assert min(lengths[:-1]) >= 3 and sum(lengths) == 10


def test_the_threshold_adapts_to_the_stream():
    """The same frame-to-frame jitter closes cubes in a calm stream's scale only where it stands out: a
    noisy stream (large jitter everywhere) is not cut at every frame."""
    noisy = scene_clip([30], noise=1.0)
    lengths = [b - a for a, b, _ in ChangeCubing(min_len=1, max_len=30).clip_cubes(noisy)]
    assert len(lengths) < 15


def test_stream_form_equals_whole_clip_form():
    clip = scene_clip([5, 8, 3, 9], h=5, w=6, seed=3)
    grid = (2, 2, 3)  # 5 rows into 2: uneven bins
    rule = ChangeCubing(min_len=2, max_len=6)
    whole = rule.clip_cubes(clip, grid)
    state, opened, got, start = rule.init_state(1, clip.shape[-1]), [], [], 0
    for i, frame in enumerate(clip):
        pooled = pool_frame(frame, grid[1:])  # space as each frame arrives
        closed, _, state = rule.step(frame_feature(pooled)[None], state)
        if bool(closed):
            got.append((start, i, pool_time(torch.stack(opened), grid[0])))
            opened, start = [], i
        opened.append(pooled)
    got.append((start, len(clip), pool_time(torch.stack(opened), grid[0])))
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in whole]
    for (_, _, x), (_, _, y) in zip(got, whole):
        torch.testing.assert_close(x, y)


def test_pooling_changes_only_the_grid():
    frames = torch.randn(5, 6, 8, 4)
    assert pool_cube(frames, None) is frames  # no pooling: the frames as they are
    pooled = pool_cube(frames, (1, 3, 4))
    assert pooled.shape == (1, 3, 4, 4)
    torch.testing.assert_close(pooled[0, 0, 0], frames[:, :2, :2].mean(dim=(0, 1, 2)))  # a 2x2 block over all frames
    torch.testing.assert_close(pooled.mean(dim=(0, 1, 2)), frames.mean(dim=(0, 1, 2)))  # the mean token kept
    # a grid as large as the frames leaves each frame as it is
    torch.testing.assert_close(pool_cube(frames, (5, 6, 8)), frames)


def test_identity_mamba_changes_nothing():
    enc = MambaTemporalEncoder(16, TemporalConfig(n_layers=2), identity=True)
    x = torch.randn(2, 7, 4, 16)
    y, _ = enc(x)
    torch.testing.assert_close(y, x)


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl", "smolvlm"])
def vision(request, tmp_path_factory):
    path = FAMILIES[request.param](tmp_path_factory.mktemp(request.param))
    return load_vlm(str(path), "vision", dtype="float32", device="cpu")


def camera(n, seed, h=56, w=84):
    """Frames of a camera that changes scene every 4 frames."""
    rng = np.random.default_rng(seed)
    scenes = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(math.ceil(n / 4))]
    return [np.clip(scenes[i // 4].astype(int) + rng.integers(-3, 4, (h, w, 3)), 0, 255).astype(np.uint8)
            for i in range(n)]


def run(encoder, streams: dict[str, list[np.ndarray]], batched: bool):
    cubes = []
    for sid in streams:
        encoder.add_stream(sid)
    n = len(next(iter(streams.values())))
    for i in range(n):
        if batched:
            cubes += encoder.push(list(streams), [f[i] for f in streams.values()], [0.5 * i + 1] * len(streams))
        else:
            for sid, f in streams.items():
                cubes += encoder.push([sid], [f[i]], [0.5 * i + 1])
    return sorted(cubes, key=lambda c: (c.stream_id, c.index))


def test_vlm_stream_encoder_batches_streams_without_mixing_them(vision):
    streams = {"a": camera(12, 1), "b": camera(12, 2, h=84, w=56), "c": camera(12, 3)}
    batched = run(VLMStreamEncoder(vision, (2, 2, 2), 2, 6), streams, True)
    alone = run(VLMStreamEncoder(vision, (2, 2, 2), 2, 6), streams, False)
    assert [(c.stream_id, c.start, c.end) for c in batched] == [(c.stream_id, c.start, c.end) for c in alone]
    for x, y in zip(batched, alone):
        torch.testing.assert_close(x.tokens, y.tokens, rtol=1e-4, atol=1e-5)
    assert all(c.tokens.shape == (8, vision.width) for c in batched)  # K = 2*2*2 whatever the frame size
    assert [c.start for c in batched if c.stream_id == "a"] == [1.0, 3.0]  # scene changes every 4 frames (t=5 is open)


def test_an_identity_temporal_encoder_changes_no_cube(vision):
    streams = {"a": camera(10, 4)}
    plain = run(VLMStreamEncoder(vision, (1, 2, 2), 2, 6), streams, True)
    mamba = MambaTemporalEncoder(vision.width, TemporalConfig(n_layers=1), identity=True)
    temporal = run(VLMStreamEncoder(vision, (1, 2, 2), 2, 6, temporal=mamba), streams, True)
    assert [(c.start, c.end) for c in plain] == [(c.start, c.end) for c in temporal]
    for x, y in zip(plain, temporal):
        torch.testing.assert_close(x.tokens, y.tokens)


def test_state_round_trip_resumes_exactly(vision):
    frames = camera(10, 5)
    whole = run(VLMStreamEncoder(vision, (1, 2, 2), 2, 6), {"a": frames}, True)
    first = VLMStreamEncoder(vision, (1, 2, 2), 2, 6)
    got = run(first, {"a": frames[:5]}, True)
    second = VLMStreamEncoder(vision, (1, 2, 2), 2, 6)
    second.set_state("a", first.get_state("a"))
    for i in range(5, 10):
        got += second.push(["a"], [frames[i]], [0.5 * i + 1])
    assert [(c.index, c.start, c.end) for c in got] == [(c.index, c.start, c.end) for c in whole]
    with pytest.raises(ValueError, match="cannot restore"):
        VLMStreamEncoder(vision, (1, 3, 3), 2, 6).set_state("a", first.get_state("a"))


def test_worker_restores_a_vlm_stream_from_its_store(vision, tmp_path):
    """The encoder worker over a VLM's stream encoder: a crashed worker's successor reads the stream's memory
    back, resumes its encoder state and goes on; a state written under another grid starts afresh."""
    from actors.worker import EncoderWorker
    from configs import load_config

    cfg = load_config("vlm", {"model": {"vlm": "x"}, "runtime": {"snapshot_dir": str(tmp_path)}})
    frames = camera(16, 6)
    w = EncoderWorker(VLMStreamEncoder(vision, (1, 2, 2), 2, 6), cfg)
    w.add_stream("a")
    for i, f in enumerate(frames[:10]):
        assert w.push([("a", f, 0.5 * i + 1, 0.0)]) == {"a": None}
    before = w.timeline("a")
    assert len(before) >= 2
    w2 = EncoderWorker(VLMStreamEncoder(vision, (1, 2, 2), 2, 6), cfg)
    last = w2.add_stream("a")  # the state saved as the last cube closed: the frames after it are lost
    assert w2.timeline("a") == before and before[-1]["end"] < last <= 0.5 * 9 + 1
    frames = frames[:10] + camera(6, 7)  # the camera goes on: later frames than any saved
    for i, f in enumerate(frames[10:], start=10):
        assert w2.push([("a", f, 0.5 * i + 1, 0.0)]) == {"a": None}
    assert w2.push([("a", frames[0], last, 0.0)])["a"].startswith("stream 'a': timestamp")  # not after the last
    assert w2.timeline("a")[:len(before)] == before and len(w2.timeline("a")) > len(before)
    other = EncoderWorker(VLMStreamEncoder(vision, (1, 2, 2), 2, 8), cfg)  # another cube length: another fingerprint
    other.add_stream("a")
    assert other.timeline("a") == w2.timeline("a")  # the memory is read back whatever the encoder
