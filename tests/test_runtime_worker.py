"""EncoderWorker without Ray: batching, refusals, snapshots and restore."""
import numpy as np
import pytest
import torch

from actors.worker import EncoderWorker, SnapshotStore
from configs import load_config
from models import CubeEncoder


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CubeEncoder(load_config()).eval()


def frame(v):
    return np.full((64, 64, 3), v % 256, np.uint8)


def test_restore_keeps_every_closed_cube_and_continues(model, tmp_path):
    w = EncoderWorker(model, SnapshotStore(tmp_path))
    w.add_stream("a"), w.add_stream("b")
    for k in range(40):
        assert w.push([("a", frame(k * 37), k * 0.5, 0.0), ("b", frame(k * 11), k * 0.5, 0.0)]) == {"a": None, "b": None}
    before = w.timeline("a")
    assert before
    # a fresh worker (a restarted or moved encoder) restores from the snapshot
    w2 = EncoderWorker(model, SnapshotStore(tmp_path))
    last = w2.add_stream("a")
    assert w2.timeline("a") == before and last is not None and last >= before[-1]["end"]
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(w2.window("a"), w.window("a")))
    for k in range(40, 80):
        w2.push([("a", frame(k * 37), k * 0.5, 0.0)])
    after = w2.timeline("a")
    assert after[:len(before)] == before and [c["index"] for c in after] == list(range(len(after)))


def test_bad_frame_is_refused_alone(model, tmp_path):
    w = EncoderWorker(model, SnapshotStore(tmp_path))
    w.add_stream("a"), w.add_stream("b")
    r = w.push([("a", np.zeros((4, 4), np.uint8), 0.0, 0.0), ("b", frame(1), 0.0, 0.0), ("c", frame(1), 0.0, 0.0)])
    assert r["b"] is None and r["c"] == "unknown stream" and "[H, W, 3]" in r["a"]
    assert w.counters["a"].bad_frames == 1 and w.counters["b"].frames == 1
    w.remove_stream("b")
    assert not (tmp_path / "b.snap").exists()


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 65, 5])
def test_stream_ids_are_safe_file_names(model, tmp_path, bad):
    with pytest.raises(ValueError):
        EncoderWorker(model, SnapshotStore(tmp_path)).add_stream(bad)
