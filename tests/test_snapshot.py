import logging

import numpy as np
import pytest
import torch

from configs import MemoryConfig
from stream.codec import packb
from stream.cube import Cube
from stream.memory import RollingMemory, make_thumbnail
from stream.snapshot import MemoryStore, SnapshotError, read_snapshot

CFG = MemoryConfig(token_budget=24, compact_every=10)
K, D = 3, 5


def cube(i: int, sid: str = "cam") -> Cube:
    g = torch.Generator().manual_seed(i)
    return Cube(sid, i, i * 2.5, i * 2.5 + 2.0, 5, torch.randn(K, D, generator=g), 0.9)


def thumb(i: int) -> bytes:
    return make_thumbnail(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def same(a: RollingMemory, b: RollingMemory) -> bool:
    return packb(a.state()) == packb(b.state())


def reference(n: int) -> RollingMemory:
    """What the memory holds after cubes 0 .. n-1, built without any files."""
    m = RollingMemory("cam", CFG.token_budget, CFG.max_thumbnail_bytes)
    for i in range(n):
        m.add(cube(i), thumb(i) if i % 3 == 0 else None)
    return m


def run(root, n: int, start: int = 0, memory: RollingMemory | None = None) -> tuple[MemoryStore, RollingMemory]:
    store = MemoryStore(root, "cam", CFG)
    rec = store.load()
    memory = rec.memory
    for i in range(start, n):
        store.add(memory, cube(i), thumb(i) if i % 3 == 0 else None)
    return store, memory


def test_snapshot_and_restore_compare_equal(tmp_path):
    store, live = run(tmp_path, 47)  # 4 compactions and 7 cubes in the log since
    store.close()
    rec = MemoryStore(tmp_path, "cam", CFG).load()
    assert rec.problems == [] and rec.replayed == 7 and rec.snapshot == "snap-00000004.bin"
    assert same(rec.memory, live) and same(rec.memory, reference(47))
    assert any(e.thumbnail for e in rec.memory) and rec.memory.tokens <= CFG.token_budget


def test_restart_goes_on_where_it_stopped(tmp_path):
    run(tmp_path, 23)[0].close()
    store, memory = run(tmp_path, 61, start=23)
    store.close()
    assert same(memory, reference(61)) and same(MemoryStore(tmp_path, "cam", CFG).load().memory, reference(61))
    names = sorted(p.name for p in store.dir.iterdir())
    assert names == ["log-00000005.bin", "log-00000006.bin", "snap-00000005.bin", "snap-00000006.bin"]  # two generations


def test_no_files_is_an_empty_memory(tmp_path):
    rec = MemoryStore(tmp_path, "cam", CFG).load()
    assert len(rec.memory) == 0 and rec.snapshot is None and rec.replayed == 0 and rec.problems == []


def test_torn_log_tail_recovers_the_last_good_state(tmp_path, caplog):
    store, _ = run(tmp_path, 15)  # snapshot after 10, cubes 10..14 in the log
    store.close()
    log_file = store.path("log", 1)
    log_file.write_bytes(log_file.read_bytes()[:-7])  # the last record was cut short by a crash
    with caplog.at_level(logging.WARNING, logger="stream.snapshot"):
        rec = MemoryStore(tmp_path, "cam", CFG).load()
    assert rec.replayed == 4 and len(rec.problems) == 1 and "truncated" in rec.problems[0]
    assert "log-00000001.bin" in caplog.text
    assert same(rec.memory, reference(14))
    # recovery compacted, so new cubes never follow the torn record; the next start is clean
    store, memory = run(tmp_path, 20, start=14)
    store.close()
    again = MemoryStore(tmp_path, "cam", CFG).load()
    assert again.problems == [] and same(again.memory, reference(20))


def test_corrupt_byte_in_the_log_stops_replay_before_it(tmp_path):
    store, _ = run(tmp_path, 16)
    store.close()
    log_file = store.path("log", 1)
    data = bytearray(log_file.read_bytes())
    second = len(data) * 2 // 6  # somewhere inside the third of six records
    data[second] ^= 0x40
    log_file.write_bytes(bytes(data))
    rec = MemoryStore(tmp_path, "cam", CFG).load()
    assert "checksum" in rec.problems[0] and rec.replayed == 2
    assert same(rec.memory, reference(12))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_snapshot_is_a_clear_error_and_recovery_falls_back(tmp_path, damage):
    store, _ = run(tmp_path, 25)  # snapshots 1 and 2 (after 10 and 20 cubes), logs 1 and 2
    store.close()
    snap = store.path("snap", 2)
    data = bytearray(snap.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    snap.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="truncated" if damage == "truncate" else "checksum"):
        read_snapshot(snap)
    rec = MemoryStore(tmp_path, "cam", CFG).load()
    assert rec.snapshot == "snap-00000001.bin" and "snap-00000002.bin" in rec.problems[0]
    assert same(rec.memory, reference(25))  # the older generation and both logs hold everything


def test_valid_checksum_but_wrong_content_is_a_clear_error(tmp_path):
    from stream.snapshot import frame
    bad = tmp_path / "snap-00000001.bin"
    for payload, message in [(b"\xc1", "not a valid snapshot"), (packb({"version": 99}), "version"),
                             (packb({"version": 1, "memory": {"stream_id": "cam"}}), "not a valid snapshot")]:
        bad.write_bytes(frame(payload))
        with pytest.raises(SnapshotError, match=message):
            read_snapshot(bad)
    bad.write_bytes(frame(packb({"version": 1})) * 2)
    with pytest.raises(SnapshotError, match="one record"):
        read_snapshot(bad)
    bad.write_bytes(frame(packb({"version": 1, "memory": reference(5).state()})))
    with pytest.raises(SnapshotError, match="exceeds"):
        read_snapshot(bad, max_bytes=100)


def test_crashed_compaction_leaves_the_old_state(tmp_path):
    store, _ = run(tmp_path, 13)
    store.close()
    (store.dir / "snap-00000002.bin.tmp").write_bytes(b"half a snapsh")  # died before its rename
    rec = MemoryStore(tmp_path, "cam", CFG).load()
    assert rec.problems == [] and same(rec.memory, reference(13))
    assert not list(store.dir.glob("*.tmp"))


def test_stream_ids_map_to_their_own_folders(tmp_path):
    a, b = MemoryStore(tmp_path, "../up", CFG), MemoryStore(tmp_path, "a/b", CFG)
    assert a.dir.parent == tmp_path and b.dir.parent == tmp_path and a.dir != b.dir
    assert MemoryStore(tmp_path, "..", CFG).dir.name == "%2E%2E"
    with pytest.raises(ValueError, match="non-empty"):
        MemoryStore(tmp_path, "", CFG)
    store = MemoryStore(tmp_path, "cam", CFG)
    store.load()
    with pytest.raises(ValueError, match="stream 'other'"):
        store.compact(RollingMemory("other", 8))
    store.close()
