"""A stream's rolling memory: closed cubes under a token budget, coarsening with age instead of forgetting.

Every entry holds K tokens for a span of stream time. Over budget, two neighbouring entries merge into one
coarser entry that spans both: its tokens are the slot-wise mean of theirs (slot i of every cube comes from
the same learned resampler query, so slots are comparable), weighted by how many source cubes each holds,
so an entry's tokens are always the plain mean of the cubes it covers whatever the merge order.

Which pair merges is a log-structured rule. An entry's level counts its merges (a level-L entry holds about
2^L cubes), and levels never increase from old to new. Over budget, the level holding the most entries
gives up its two oldest, which are neighbours at the boundary with the next level up. Levels thus hold
about equal numbers of entries, so an entry's span grows in proportion to its age: the newest cubes stay
at full resolution, and a day of history costs only a few more entries than an hour.
"""
from __future__ import annotations

import bisect
import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stream.cube import Cube

JPEG_MAGIC = b"\xff\xd8"


class RejectedCube(ValueError):
    """A cube that cannot join this memory (wrong stream, out of order, bad tokens); the memory is unchanged."""


@dataclass(eq=False)
class MemoryEntry:
    id: int  # stable within the memory; a merge retires its parts' ids and takes a new one
    start: float  # stream time (s) of the first frame covered
    end: float  # stream time (s) of the last frame covered
    level: int  # 0 for a cube as it closed; a merge is one more than the higher of its parts
    num_frames: int
    cubes: int  # source cubes averaged into the tokens
    tokens: torch.Tensor  # [K, D] float32
    key: torch.Tensor  # [D] unit-norm mean of the tokens: a cheap retrieval key
    thumbnail: bytes | None  # a small JPEG of one frame in the span


def retrieval_key(tokens: torch.Tensor) -> torch.Tensor:
    return F.normalize(tokens.mean(0), dim=0)


def make_thumbnail(frame: np.ndarray, size: int = 64, quality: int = 75) -> bytes:
    """A JPEG no larger than size x size (aspect kept) of a uint8 [H, W, 3] RGB frame."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"thumbnail: need a uint8 [H, W, 3] array, got {getattr(frame, 'dtype', type(frame))} "
                         f"{getattr(frame, 'shape', '')}")
    img = Image.fromarray(frame)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class RollingMemory:
    def __init__(self, stream_id: str, token_budget: int, max_thumbnail_bytes: int = 16384):
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"memory: stream_id must be a non-empty str, got {stream_id!r}")
        if token_budget <= 0:
            raise ValueError(f"memory: token_budget must be positive, got {token_budget!r}")
        self.stream_id, self.token_budget, self.max_thumbnail_bytes = stream_id, token_budget, max_thumbnail_bytes
        self.shape: tuple[int, int] | None = None  # [K, D], fixed by the first cube
        self.last_index = -1  # the index of the last cube added: a replayed log skips what it already holds
        self.next_id = 0
        self._entries: list[MemoryEntry] = []  # in time order, levels non-increasing
        self._levels: Counter[int] = Counter()

    # ---- writes ----

    def add(self, cube: Cube, thumbnail: bytes | None = None) -> MemoryEntry:
        """Append a closed cube (tokens are copied), then merge old neighbours until within budget."""
        tokens = self._check(cube, thumbnail)
        self.shape = tuple(tokens.shape)
        self.last_index = cube.index
        entry = MemoryEntry(self._new_id(), float(cube.start), float(cube.end), 0, int(cube.num_frames), 1,
                            tokens, retrieval_key(tokens), thumbnail)
        self._entries.append(entry)
        self._levels[0] += 1
        while self.tokens > self.token_budget:
            self._merge_oldest()
        return entry

    def set_budget(self, token_budget: int) -> None:
        """Change the budget, merging at once if the memory now holds too much."""
        if token_budget <= 0 or self.shape is not None and self.shape[0] > token_budget:
            raise ValueError(f"memory: a budget of {token_budget} tokens cannot hold one entry of {self.shape}")
        self.token_budget = token_budget
        while self.tokens > self.token_budget:
            self._merge_oldest()

    def _check(self, cube: Cube, thumbnail: bytes | None) -> torch.Tensor:
        if not isinstance(cube, Cube):
            raise RejectedCube(f"memory[{self.stream_id}]: expected a Cube, got {type(cube).__name__}")
        where = f"memory[{self.stream_id}]: cube {cube.index}"
        if cube.stream_id != self.stream_id:
            raise RejectedCube(f"{where} belongs to stream {cube.stream_id!r}")
        if not isinstance(cube.index, int) or cube.index <= self.last_index:
            raise RejectedCube(f"{where} is not after the last cube added ({self.last_index})")
        if not all(isinstance(x, (int, float)) and np.isfinite(x) for x in (cube.start, cube.end)) or cube.start > cube.end:
            raise RejectedCube(f"{where} has an invalid time span [{cube.start}, {cube.end}]")
        if self._entries and cube.start < self._entries[-1].end:
            raise RejectedCube(f"{where} starts at {cube.start}, before the memory's newest time {self._entries[-1].end}")
        if not isinstance(cube.num_frames, int) or cube.num_frames <= 0:
            raise RejectedCube(f"{where} has num_frames {cube.num_frames!r}")
        t = cube.tokens
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or not t.is_floating_point() or 0 in t.shape:
            raise RejectedCube(f"{where}: tokens must be a non-empty float [K, D] tensor, got "
                               f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
        if self.shape is not None and tuple(t.shape) != self.shape:
            raise RejectedCube(f"{where}: tokens of shape {tuple(t.shape)}, this memory holds {list(self.shape)}")
        if t.shape[0] > self.token_budget:
            raise RejectedCube(f"{where}: {t.shape[0]} tokens exceed the whole budget of {self.token_budget}")
        t = t.detach().to("cpu", torch.float32).clone()
        if not torch.isfinite(t).all():
            raise RejectedCube(f"{where}: tokens are not all finite")
        if thumbnail is not None:
            if not isinstance(thumbnail, bytes) or not thumbnail.startswith(JPEG_MAGIC):
                raise RejectedCube(f"{where}: the thumbnail must be JPEG bytes")
            if len(thumbnail) > self.max_thumbnail_bytes:
                raise RejectedCube(f"{where}: thumbnail of {len(thumbnail)} bytes exceeds {self.max_thumbnail_bytes}")
        return t

    def _merge_oldest(self) -> None:
        level, count = max(self._levels.items(), key=lambda lc: (lc[1], lc[0]))  # ties: the coarser level
        # The two oldest of that level are neighbours because levels never increase from old to new. With a
        # budget too small for two entries a level, every level holds one: merge the two oldest entries.
        i = bisect.bisect_left(self._entries, -level, key=lambda e: -e.level) if count >= 2 else 0
        a, b = self._entries[i], self._entries[i + 1]
        w = a.cubes / (a.cubes + b.cubes)
        tokens = w * a.tokens + (1 - w) * b.tokens
        merged = MemoryEntry(self._new_id(), a.start, b.end, max(a.level, b.level) + 1, a.num_frames + b.num_frames,
                             a.cubes + b.cubes, tokens, retrieval_key(tokens),
                             a.thumbnail if a.thumbnail is not None else b.thumbnail)  # one picture per entry
        self._entries[i:i + 2] = [merged]
        for lv in (a.level, b.level):
            self._levels[lv] -= 1
            if not self._levels[lv]:
                del self._levels[lv]
        self._levels[merged.level] += 1

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    # ---- reads ----

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def entries(self) -> list[MemoryEntry]:
        """Every entry, in time order."""
        return list(self._entries)

    @property
    def tokens(self) -> int:
        return len(self._entries) * self.shape[0] if self._entries else 0

    @property
    def newest_time(self) -> float | None:
        return self._entries[-1].end if self._entries else None

    @property
    def nbytes(self) -> int:
        """Payload bytes held: tokens, keys and thumbnails (not Python's per-object overhead)."""
        return sum(e.tokens.nbytes + e.key.nbytes + len(e.thumbnail or b"") for e in self._entries)

    def levels(self) -> dict[int, int]:
        """Entries per level."""
        return dict(sorted(self._levels.items()))

    def get(self, entry_id: int) -> MemoryEntry:
        for e in self._entries:
            if e.id == entry_id:
                return e
        raise KeyError(f"memory[{self.stream_id}]: no entry {entry_id} (never existed, or merged into a coarser one)")

    def window(self, start: float, end: float) -> list[MemoryEntry]:
        """Entries whose span overlaps [start, end], in time order."""
        if not start <= end:
            raise ValueError(f"memory: window start {start} is after its end {end}")
        i = bisect.bisect_left(self._entries, start, key=lambda e: e.end)  # spans are disjoint and ordered
        j = bisect.bisect_right(self._entries, end, key=lambda e: e.start)
        return self._entries[i:j]

    def last(self, seconds: float) -> list[MemoryEntry]:
        """Entries overlapping the last `seconds` of stream time before the newest frame held."""
        if not seconds >= 0:
            raise ValueError(f"memory: seconds must be >= 0, got {seconds}")
        if not self._entries:
            return []
        return self.window(self.newest_time - seconds, self.newest_time)

    # ---- state, for snapshots ----

    def state(self) -> dict:
        """Plain data (tensors inside) for stream.codec; `from_state` rebuilds an identical memory."""
        return {"stream_id": self.stream_id, "token_budget": self.token_budget,
                "max_thumbnail_bytes": self.max_thumbnail_bytes, "last_index": self.last_index,
                "next_id": self.next_id,
                "entries": [[e.id, e.start, e.end, e.level, e.num_frames, e.cubes, e.tokens, e.thumbnail]
                            for e in self._entries]}

    @classmethod
    def from_state(cls, s: dict) -> RollingMemory:
        """Inverse of `state`; raises ValueError (or KeyError/TypeError) on data that `state` cannot have written."""
        m = cls(s["stream_id"], int(s["token_budget"]), int(s["max_thumbnail_bytes"]))
        m.last_index, m.next_id = int(s["last_index"]), int(s["next_id"])
        for eid, start, end, level, num_frames, cubes, tokens, thumbnail in s["entries"]:
            if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.float32 or tokens.ndim != 2:
                raise ValueError(f"entry {eid}: tokens must be a float32 [K, D] tensor")
            if m.shape is not None and tuple(tokens.shape) != m.shape:
                raise ValueError(f"entry {eid}: tokens of shape {tuple(tokens.shape)}, others are {list(m.shape)}")
            prev = m._entries[-1] if m._entries else None
            if not start <= end or prev is not None and (start < prev.end or level > prev.level) or not 0 <= eid < m.next_id:
                raise ValueError(f"entry {eid}: out of order")
            m.shape = tuple(tokens.shape)
            m._entries.append(MemoryEntry(int(eid), float(start), float(end), int(level), int(num_frames), int(cubes),
                                          tokens, retrieval_key(tokens), thumbnail))
            m._levels[int(level)] += 1
        if m.tokens > m.token_budget:
            raise ValueError(f"{m.tokens} tokens exceed the budget of {m.token_budget}")
        return m
