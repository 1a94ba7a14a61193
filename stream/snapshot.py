"""Durable rolling memory: an append-only log of closed cubes plus periodic full snapshots, one folder per stream.

Files, by generation g (one more at each compaction):
    snap-g.bin  the memory's full state when compaction g ran, written atomically (temp, fsync, rename)
    log-g.bin   every cube added after snapshot g (log-0 before the first snapshot)
Each file is a run of records: an 8-byte header (payload length, CRC-32 of the payload; little-endian)
then a stream.codec payload, so a torn write or a flipped bit is caught before msgpack sees the bytes.

Recovery loads the newest snapshot that reads cleanly, falling back to the one before it (compaction
keeps two generations), then replays the logs from that generation on. Replay stops at the first damaged
record, so the memory it returns is always a prefix of the stream's history; damage is reported, and
a recovery that found any compacts at once so that new records never follow a damaged one.
A store has one writer: the worker that owns the stream.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from configs import MemoryConfig
from stream.codec import DEFAULT_MAX_BYTES, CodecError, packb, unpackb
from stream.cube import Cube
from stream.memory import MemoryEntry, RejectedCube, RollingMemory

log = logging.getLogger(__name__)

VERSION = 1
HEADER = struct.Struct("<II")  # payload length, crc32(payload)
FILE = re.compile(r"(snap|log)-(\d{8})\.bin")
CUBE_FIELDS = [f.name for f in dataclasses.fields(Cube)]


class SnapshotError(ValueError):
    """A snapshot or log file that is truncated, corrupt, or not one this module wrote."""


@dataclass
class Recovery:
    memory: RollingMemory
    snapshot: str | None  # the snapshot file the state came from; None when it started empty
    replayed: int  # log records added on top of it
    problems: list[str]  # damage found and skipped over, oldest first (each also logged as a warning)


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def records(path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
    """Yield the payloads of a record file in order; raise SnapshotError at the first damaged one."""
    size = path.stat().st_size
    if size > max_bytes:
        raise SnapshotError(f"{path.name}: {size} bytes exceeds the limit of {max_bytes}")
    data, at = path.read_bytes(), 0
    while at < len(data):
        if len(data) - at < HEADER.size:
            raise SnapshotError(f"{path.name}: truncated record header at byte {at}")
        n, crc = HEADER.unpack_from(data, at)
        payload = data[at + HEADER.size: at + HEADER.size + n]
        if len(payload) < n:
            raise SnapshotError(f"{path.name}: record at byte {at} is truncated ({len(payload)} of {n} bytes)")
        if zlib.crc32(payload) != crc:
            raise SnapshotError(f"{path.name}: record at byte {at} fails its checksum")
        yield payload
        at += HEADER.size + n


def read_snapshot(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> RollingMemory:
    """The memory a snapshot file holds; SnapshotError if it is damaged in any way."""
    path = Path(path)
    payloads = list(records(path, max_bytes))
    if len(payloads) != 1:
        raise SnapshotError(f"{path.name}: a snapshot is one record, found {len(payloads)}")
    try:
        state = unpackb(payloads[0], max_bytes)
        if state.get("version") != VERSION:
            raise SnapshotError(f"{path.name}: unknown snapshot version {state.get('version')!r}")
        return RollingMemory.from_state(state["memory"])
    except SnapshotError:
        raise
    except (CodecError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise SnapshotError(f"{path.name}: not a valid snapshot: {e}") from e


def decode_cube(payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Cube, bytes | None]:
    try:
        rec = unpackb(payload, max_bytes)
        return Cube(**{k: rec[k] for k in CUBE_FIELDS}), rec["thumbnail"]
    except (CodecError, KeyError, TypeError) as e:
        raise SnapshotError(f"not a valid log record: {e}") from e


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one, whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MemoryStore:
    """The files of one stream's memory under `root`. Call `load` first; then `add` (or `append` and
    `compact`) for each closed cube."""

    def __init__(self, root: str | Path, stream_id: str, cfg: MemoryConfig | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"store: stream_id must be a non-empty str, got {stream_id!r}")
        name = quote(stream_id, safe="").replace(".", "%2E")  # one safe, reversible folder name per stream id
        if len(name) > 200:
            raise ValueError(f"store: stream_id is too long for a folder name ({len(name)} characters encoded)")
        self.dir, self.stream_id, self.max_bytes = Path(root) / name, stream_id, max_bytes
        self.cfg = cfg or MemoryConfig()
        self.gen = 0
        self.pending = 0  # records appended since the last snapshot
        self._log = None

    def path(self, kind: str, gen: int) -> Path:
        return self.dir / f"{kind}-{gen:08d}.bin"

    def load(self) -> Recovery:
        """Rebuild the memory from the files (an empty memory if there are none) and get ready to append."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob("*.tmp"):  # a compaction that crashed before its rename
            tmp.unlink()
        files = {}
        for p in self.dir.iterdir():
            if m := FILE.fullmatch(p.name):
                files.setdefault(m[1], []).append(int(m[2]))
        problems: list[str] = []
        memory, base, source = None, 0, None
        for gen in sorted(files.get("snap", []), reverse=True):
            try:
                memory = read_snapshot(self.path("snap", gen), self.max_bytes)
            except SnapshotError as e:
                problems.append(f"{e}; falling back to an older state")
                continue
            if memory.stream_id != self.stream_id:
                raise SnapshotError(f"{self.path('snap', gen)} belongs to stream {memory.stream_id!r}")
            base, source = gen, self.path("snap", gen).name
            break
        if memory is None:
            memory = RollingMemory(self.stream_id, self.cfg.token_budget, self.cfg.max_thumbnail_bytes)
            if problems:  # logs older than the damaged snapshots were deleted: start from the oldest left
                base = min(files.get("log", [0]))
        replayed = self._replay(memory, [g for g in sorted(files.get("log", [])) if g >= base], problems)
        memory.set_budget(self.cfg.token_budget)  # the profile may have changed since the snapshot
        self.gen = max([base, *files.get("snap", []), *files.get("log", [])])
        for p in problems:
            log.warning("memory store %s: %s", self.dir, p)
        if problems:
            self.compact(memory)
        else:
            self.pending = replayed  # the records in the log it goes on appending to
            self._open_log()
        return Recovery(memory, source, replayed, problems)

    def _replay(self, memory: RollingMemory, gens: list[int], problems: list[str]) -> int:
        replayed = 0
        for gen in gens:
            path = self.path("log", gen)
            try:
                for payload in records(path, self.max_bytes):
                    cube, thumbnail = decode_cube(payload, self.max_bytes)
                    if cube.index > memory.last_index:  # older ones are already in the snapshot
                        memory.add(cube, thumbnail)
                        replayed += 1
            except (SnapshotError, RejectedCube) as e:
                problems.append(f"{path.name}: {e}; replay stopped there")
                break
        return replayed

    def append(self, cube: Cube, thumbnail: bytes | None = None) -> None:
        """Log a cube that the memory accepted."""
        rec = {k: getattr(cube, k) for k in CUBE_FIELDS} | {"thumbnail": thumbnail}
        self._log.write(frame(packb(rec)))
        self._log.flush()
        if self.cfg.fsync:
            os.fsync(self._log.fileno())
        self.pending += 1

    def compact(self, memory: RollingMemory) -> None:
        """Write a full snapshot as the next generation, start its log, and drop generations before the last."""
        if memory.stream_id != self.stream_id:
            raise ValueError(f"store[{self.stream_id}]: cannot snapshot the memory of stream {memory.stream_id!r}")
        gen = self.gen + 1
        write_atomic(self.path("snap", gen), frame(packb({"version": VERSION, "memory": memory.state()})))
        self.gen, self.pending = gen, 0
        self._open_log()
        for p in self.dir.iterdir():
            if (m := FILE.fullmatch(p.name)) and int(m[2]) < gen - 1:
                p.unlink()

    def add(self, memory: RollingMemory, cube: Cube, thumbnail: bytes | None = None) -> MemoryEntry:
        """The usual path: add to the memory (which validates), log it, and compact every `compact_every` cubes."""
        entry = memory.add(cube, thumbnail)
        self.append(cube, thumbnail)
        if self.pending >= self.cfg.compact_every:
            self.compact(memory)
        return entry

    def _open_log(self) -> None:
        self.close()
        self._log = open(self.path("log", self.gen), "ab")
        fsync_dir(self.dir)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.iterdir() if FILE.fullmatch(p.name))
