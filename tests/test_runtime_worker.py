"""EncoderWorker without Ray: batching, refusals, the rolling memory per stream, its store and restore."""
import numpy as np
import pytest
import torch

from actors.worker import ENCODER_STATE, EncoderWorker
from configs import load_config
from models import CubeEncoder
from stream.snapshot import MemoryStore


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)  # a tiny model: threads only contend, the more so on a busy machine
    torch.manual_seed(0)
    return CubeEncoder(load_config()).eval()


def config(tmp_path, **memory):
    return load_config(overrides={"runtime": {"snapshot_dir": str(tmp_path)}, "memory": {"fsync": False, **memory}})


def frame(v):
    return np.full((64, 64, 3), v % 256, np.uint8)


def run(w, sid, ks, step=37):
    for k in ks:
        assert w.push([(sid, frame(k * step), k * 0.5, 0.0)]) == {sid: None}


def test_restore_keeps_every_closed_cube_and_continues(model, tmp_path):
    cfg = config(tmp_path)
    w = EncoderWorker(model, cfg)
    w.add_stream("a"), w.add_stream("b")
    for k in range(40):
        assert w.push([("a", frame(k * 37), k * 0.5, 0.0), ("b", frame(k * 11), k * 0.5, 0.0)]) == {"a": None, "b": None}
    before = w.timeline("a")
    assert before and all(e["level"] == 0 and e["thumbnail"] for e in before)
    assert w.thumbnail("a", before[0]["id"]).startswith(b"\xff\xd8")
    # a crash: a fresh worker restores from the store, with the encoder state saved as the last cube closed
    w2 = EncoderWorker(model, cfg)
    last = w2.add_stream("a")
    assert w2.timeline("a") == before and before[-1]["end"] < last <= 39 * 0.5
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(w2.window("a"), w.window("a")))
    run(w2, "a", range(40, 80))
    after = w2.timeline("a")
    assert after[:len(before)] == before and [e["id"] for e in after] == list(range(len(after)))


def test_a_stream_handed_over_resumes_exactly(model, tmp_path):
    cfg = config(tmp_path)
    w = EncoderWorker(model, cfg)
    w.add_stream("a"), w.add_stream("ref")
    for k in range(40):
        w.push([("a", frame(k * 37), k * 0.5, 0.0), ("ref", frame(k * 37), k * 0.5, 0.0)])
    w.remove_stream("a", forget=False)
    w2 = EncoderWorker(model, cfg)
    assert w2.add_stream("a") == 39 * 0.5
    for k in range(40, 80):
        w2.push([("a", frame(k * 37), k * 0.5, 0.0)])
        w.push([("ref", frame(k * 37), k * 0.5, 0.0)])
    moved, ref = w2.window("a"), w.window("ref")
    assert [(e.start, e.end) for e in moved] == [(e.start, e.end) for e in ref]
    assert all(torch.allclose(x.tokens, y.tokens, atol=1e-5) for x, y in zip(moved, ref))


def test_an_encoder_state_older_than_the_memory_resumes_after_it(model, tmp_path):
    # state saved only at compaction: a crash finds the memory ahead of the encoder state
    cfg = config(tmp_path, compact_every=3)
    cfg.runtime.state_every = 1000
    w = EncoderWorker(model, cfg)
    w.add_stream("a")
    k = 0
    while k < 60 or not len(w.timeline("a")) % 3:  # until the memory has cubes the saved state has not seen
        run(w, "a", [k])
        k += 1
    before = w.timeline("a")
    w2 = EncoderWorker(model, cfg)
    last = w2.add_stream("a")
    assert last == before[-1]["end"] and w2.timeline("a") == before
    assert w2.encoder.streams["a"].next_index == len(before) and not w2.encoder.streams["a"].open_tokens
    run(w2, "a", range(k, k + 40))
    after = w2.timeline("a")
    assert len(after) > len(before) and after[:len(before)] == before and not w2.streams["a"].counters.rejected_cubes
    # a damaged state file: the encoder starts afresh, still after the memory
    (w2.streams["a"].store.dir / ENCODER_STATE).write_bytes(b"garbage")
    w3 = EncoderWorker(model, cfg)
    assert w3.add_stream("a") == after[-1]["end"] and w3.timeline("a") == after
    run(w3, "a", range(k + 40, k + 60))
    assert len(w3.timeline("a")) > len(after)


def test_over_budget_the_memory_keeps_its_budget_and_its_early_history(model, tmp_path):
    k = load_config().resampler.num_queries
    cfg = config(tmp_path, token_budget=8 * k, compact_every=16)
    w = EncoderWorker(model, cfg)
    w.add_stream("a")
    run(w, "a", range(400))
    timeline = w.timeline("a")
    s = w.streams["a"]
    assert s.counters.cubes > 40 and s.memory.tokens <= 8 * k and len(timeline) <= 8
    assert timeline[0]["start"] == 0.0 and timeline[0]["level"] > timeline[-1]["level"]
    assert sum(e["cubes"] for e in timeline) == s.counters.cubes and sum(e["num_frames"] for e in timeline) < 400
    assert w.window("a", 0.0, 1.0)[0].level == timeline[0]["level"]  # the first second, answerable coarsely
    w2 = EncoderWorker(model, cfg)
    w2.add_stream("a")
    assert w2.timeline("a") == timeline


def test_bad_frame_is_refused_alone(model, tmp_path):
    w = EncoderWorker(model, config(tmp_path))
    w.add_stream("a"), w.add_stream("b")
    r = w.push([("a", np.zeros((4, 4), np.uint8), 0.0, 0.0), ("b", frame(1), 0.0, 0.0), ("c", frame(1), 0.0, 0.0)])
    assert r["b"] is None and r["c"] == "unknown stream" and "[H, W, 3]" in r["a"]
    assert w.stats()["a"]["bad_frames"] == 1 and w.stats()["b"]["frames"] == 1
    assert list(w.stats(["b", "c"])) == ["b"]  # the streams asked for that it has
    folder = MemoryStore(tmp_path, "b").dir
    assert folder.is_dir()
    w.remove_stream("b")
    assert not folder.exists() and "b" not in w.stats()


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 65, 5])
def test_stream_ids_are_safe_file_names(model, tmp_path, bad):
    with pytest.raises(ValueError):
        EncoderWorker(model, config(tmp_path)).add_stream(bad)


def test_another_models_encoder_state_is_not_reused(model, tmp_path, caplog):
    cfg = config(tmp_path)
    w = EncoderWorker(model, cfg)
    w.add_stream("a")
    run(w, "a", range(30))
    before = w.timeline("a")
    w.remove_stream("a", forget=False)
    other = CubeEncoder(cfg).eval()  # the same shapes, other weights: a new checkpoint
    w2 = EncoderWorker(other, cfg)
    w2.add_stream("a")
    assert "another model's" in caplog.text
    assert w2.timeline("a") == before  # the memory stays
    assert w2.encoder.streams["a"].next_index == len(before)  # the encoder goes on after it
    caplog.clear()
    w3 = EncoderWorker(model, cfg)  # the model that saved it: taken, and resumes exactly
    assert w3.add_stream("a") == 29 * 0.5 and "another model's" not in caplog.text
