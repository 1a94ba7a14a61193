import numpy as np
import pytest
import torch

from configs import MemoryConfig
from stream.cube import Cube
from stream.memory import RejectedCube, RollingMemory, make_thumbnail, retrieval_key

K, D = 2, 8
FPS, FRAMES = 2.0, 5  # the sampler's rate, and the cubing target length


def cube(i: int, sid: str = "cam", tokens: torch.Tensor | None = None) -> Cube:
    """Cube i of a stream closing every FRAMES frames at FPS; tokens that differ per cube (or given)."""
    start = i * FRAMES / FPS
    if tokens is None:
        tokens = torch.full((K, D), float(i)) + torch.arange(K * D, dtype=torch.float32).view(K, D)
    return Cube(sid, i, start, start + (FRAMES - 1) / FPS, FRAMES, tokens, 1.0)


def filled(n: int, budget: int = 64) -> RollingMemory:
    m = RollingMemory("cam", budget)
    for i in range(n):
        m.add(cube(i))
    return m


def test_a_simulated_day_stays_in_budget_and_keeps_its_first_minute():
    budget = MemoryConfig().token_budget
    m = RollingMemory("cam", budget)
    n = int(24 * 3600 * FPS / FRAMES)  # 34,560 cubes
    tokens = torch.randn(K, D)
    for i in range(n):
        m.add(cube(i, tokens=tokens))
        assert m.tokens <= budget
    entries = m.entries()
    assert len(entries) == budget // K
    assert sum(e.cubes for e in entries) == n and sum(e.num_frames for e in entries) == n * FRAMES
    assert all(a.end <= b.start for a, b in zip(entries, entries[1:]))  # disjoint, in time order
    assert entries[0].start == 0.0 and entries[-1].end == cube(n - 1).end  # the whole day is covered

    first_minute = m.window(0.0, 60.0)
    assert first_minute and first_minute[0].start == 0.0 and first_minute[0].level > 5  # coarse, but there
    newest = m.last(60.0)
    assert newest and all(e.level == 0 for e in newest)  # the last minute is at full resolution
    # resolution decays with age: levels never increase from old to new, and every level is in use
    levels = [e.level for e in entries]
    assert levels == sorted(levels, reverse=True) and set(m.levels()) == set(range(max(levels) + 1))


def test_merged_tokens_are_the_mean_of_the_cubes_they_cover():
    m = filled(100, budget=16)
    for e in m:
        first = int(round(e.start * FPS / FRAMES))
        expected = torch.stack([cube(i).tokens for i in range(first, first + e.cubes)]).mean(0)
        torch.testing.assert_close(e.tokens, expected)
        torch.testing.assert_close(e.key, retrieval_key(e.tokens))
        assert e.key.norm().item() == pytest.approx(1.0)
        assert e.num_frames == e.cubes * FRAMES and e.end == cube(first + e.cubes - 1).end


def test_reads_by_window_last_and_id():
    m = filled(10, budget=1000)  # nothing merges
    assert len(m) == 10 and m.tokens == 20 and m.newest_time == cube(9).end
    assert [e.start for e in m.window(5.0, 7.4)] == [5.0]  # cube 2 spans [5.0, 7.0]
    assert [e.start for e in m.window(4.5, 5.0)] == [2.5, 5.0]  # touching a span counts (cube 1 ends at 4.5)
    assert m.window(100.0, 200.0) == [] and m.window(-5, -1) == []
    assert [e.start for e in m.last(3.0)] == [20.0, 22.5]
    assert len(m.last(1e9)) == 10 and RollingMemory("cam", 8).last(60) == []
    e = m.entries()[3]
    assert m.get(e.id) is e
    with pytest.raises(KeyError, match="merged"):
        m.get(10_000)
    with pytest.raises(ValueError, match="after its end"):
        m.window(3.0, 2.0)


def test_merged_ids_retire_and_new_ids_are_fresh():
    m = filled(40, budget=16)
    ids = [e.id for e in m]
    assert len(set(ids)) == len(ids) and max(ids) < m.next_id
    with pytest.raises(KeyError):
        m.get(0)  # cube 0's entry was merged away; its time is still covered
    assert m.window(0.0, 0.0)[0].level > 0


def test_thumbnail_is_kept_per_entry_and_bounded():
    frame = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    jpeg = make_thumbnail(frame, size=32)
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(jpeg)).size == (32, 19)
    m = RollingMemory("cam", 4)
    m.add(cube(0), jpeg)
    m.add(cube(1))
    m.add(cube(2))
    assert m.entries()[0].thumbnail == jpeg  # the merge of cubes 0 and 1 keeps cube 0's picture
    with pytest.raises(ValueError, match="uint8"):
        make_thumbnail(frame.astype(np.float32))
    small = RollingMemory("cam", 4, max_thumbnail_bytes=10)
    with pytest.raises(RejectedCube, match="exceeds"):
        small.add(cube(0), jpeg)
    with pytest.raises(RejectedCube, match="JPEG"):
        small.add(cube(0), b"PNG...")


def _bad_cubes():
    ok = cube(5)
    return {
        "another stream": (Cube("other", 5, ok.start, ok.end, 5, ok.tokens, 1.0), "belongs to stream"),
        "repeated index": (cube(4), "not after"),
        "time backwards": (Cube("cam", 5, 0.0, 1.0, 5, ok.tokens, 1.0), "before the memory's newest"),
        "reversed span": (Cube("cam", 5, ok.end, ok.start, 5, ok.tokens, 1.0), "invalid time span"),
        "nan time": (Cube("cam", 5, float("nan"), ok.end, 5, ok.tokens, 1.0), "invalid time span"),
        "wrong K": (cube(5, tokens=torch.zeros(K + 1, D)), "shape"),
        "wrong D": (cube(5, tokens=torch.zeros(K, D + 1)), "shape"),
        "1-D tokens": (cube(5, tokens=torch.zeros(K * D)), r"\[K, D\]"),
        "int tokens": (cube(5, tokens=torch.zeros(K, D, dtype=torch.int64)), r"\[K, D\]"),
        "nan tokens": (cube(5, tokens=torch.full((K, D), float("nan"))), "finite"),
        "no frames": (Cube("cam", 5, ok.start, ok.end, 0, ok.tokens, 1.0), "num_frames"),
        "not a cube": ("cube", "expected a Cube"),
    }


@pytest.mark.parametrize("name", list(_bad_cubes()))
def test_bad_input_is_a_clear_error_and_changes_nothing(name):
    bad, message = _bad_cubes()[name]
    m = filled(5, budget=8)
    before = m.state()
    with pytest.raises(RejectedCube, match=message):
        m.add(bad)
    after = m.state()
    assert {k: v for k, v in before.items() if k != "entries"} == {k: v for k, v in after.items() if k != "entries"}
    assert all(torch.equal(a[6], b[6]) and a[:6] == b[:6] for a, b in zip(before["entries"], after["entries"], strict=True))


def test_budget_smaller_than_a_cube_and_shrinking():
    with pytest.raises(RejectedCube, match="exceed the whole budget"):
        RollingMemory("cam", K - 1).add(cube(0))
    m = RollingMemory("cam", K)  # room for one entry: every new cube merges into the history
    for i in range(5):
        m.add(cube(i))
    assert len(m) == 1 and m.entries()[0].cubes == 5
    m = filled(40, budget=40)
    m.set_budget(10)
    assert m.tokens <= 10 and sum(e.cubes for e in m) == 40
    with pytest.raises(ValueError, match="cannot hold"):
        m.set_budget(1)


def test_state_round_trip_is_exact():
    m = filled(77, budget=20)
    back = RollingMemory.from_state(m.state())
    assert back.levels() == m.levels() and back.next_id == m.next_id and back.last_index == 76
    for a, b in zip(m, back, strict=True):
        assert (a.id, a.start, a.end, a.level, a.num_frames, a.cubes) == (b.id, b.start, b.end, b.level, b.num_frames, b.cubes)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.key, b.key)
    m.add(cube(77))
    back.add(cube(77))  # and the two go on identically
    assert [e.id for e in m] == [e.id for e in back]
