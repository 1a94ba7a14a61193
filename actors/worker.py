"""The plain objects the actors wrap: an encoder worker over many streams, and a stream's snapshot file.

Nothing here imports Ray: the actors in `actors/runtime.py` only move calls and data to these objects,
so the logic is tested directly.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import CubeEncoder, StreamEncoder, StreamInputError
from stream.codec import CodecError, packb, unpackb
from stream.cube import Cube

STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # also a file name: no slashes, no dot-dot
SNAPSHOT_VERSION = 1


def check_stream_id(stream_id) -> str:
    if not isinstance(stream_id, str) or not STREAM_ID.fullmatch(stream_id):
        raise ValueError(f"a stream id is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit; got {stream_id!r}")
    return stream_id


class SnapshotStore:
    """One file per stream: its encoder state and closed cubes, replaced atomically after every cube closes,
    so a reader (a restarted or moved encoder) always finds a whole snapshot, never a half-written one."""

    def __init__(self, root: str | Path):
        self.root = Path(os.path.expanduser(str(root)))
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stream_id: str) -> Path:
        return self.root / f"{check_stream_id(stream_id)}.snap"

    def save(self, stream_id: str, snapshot: dict) -> None:
        path = self.path(stream_id)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(packb(snapshot))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, stream_id: str) -> dict | None:
        """The stream's last snapshot; None if it has none. A corrupt file raises CodecError."""
        try:
            data = self.path(stream_id).read_bytes()
        except FileNotFoundError:
            return None
        snap = unpackb(data)
        if not isinstance(snap, dict) or snap.get("version") != SNAPSHOT_VERSION:
            raise CodecError(f"{self.path(stream_id)}: not a version {SNAPSHOT_VERSION} snapshot")
        return snap

    def delete(self, stream_id: str) -> None:
        self.path(stream_id).unlink(missing_ok=True)


@dataclass
class StreamCounters:
    frames: int = 0  # frames encoded
    cubes: int = 0  # cubes closed (restored ones included)
    restored_cubes: int = 0  # cubes this worker read back from the stream's snapshot
    bad_frames: int = 0  # frames refused (bad shape, timestamp out of order)
    latencies: list[float] = field(default_factory=list)  # frame arrival -> in memory (s), the last 1000


class EncoderWorker:
    """A StreamEncoder over many streams, their closed cubes, and their snapshots.

    `push` takes at most one frame per stream and runs them as one batch; a frame a stream cannot take
    is refused on its own without holding up the rest. A cube counts as closed once it is in the
    stream's snapshot: a worker that dies after that loses nothing but the open cube's frames.
    """

    def __init__(self, model: CubeEncoder, snapshots: SnapshotStore, device: str = "cpu"):
        self.encoder = StreamEncoder(model, device)
        self.snapshots = snapshots
        self.cubes: dict[str, list[Cube]] = {}
        self.counters: dict[str, StreamCounters] = {}

    def add_stream(self, stream_id: str) -> float | None:
        """Start (or take over) a stream, restoring it from its snapshot. Returns the stream time of its
        last frame encoded (None if none), which the stream's next frame must follow."""
        check_stream_id(stream_id)
        if stream_id in self.cubes:
            return self._last_pts(stream_id)
        snap = self.snapshots.load(stream_id)
        cubes = []
        if snap is None:
            self.encoder.add_stream(stream_id)
        else:
            self.encoder.set_state(stream_id, snap["encoder"])
            cubes = [Cube(stream_id=stream_id, **c) for c in snap["cubes"]]
        self.cubes[stream_id] = cubes
        self.counters[stream_id] = StreamCounters(cubes=len(cubes), restored_cubes=len(cubes))
        return self._last_pts(stream_id)

    def _last_pts(self, stream_id: str) -> float | None:
        last = self.encoder.streams[stream_id].last_pts
        return None if last == float("-inf") else last

    def remove_stream(self, stream_id: str, forget: bool = True) -> None:
        """Stop encoding a stream; `forget` also deletes its snapshot (else another worker may take it over)."""
        if stream_id in self.cubes:
            self.encoder.streams.pop(stream_id, None)
            del self.cubes[stream_id], self.counters[stream_id]
        if forget:
            self.snapshots.delete(stream_id)

    def push(self, frames: list[tuple[str, np.ndarray, float, float]]) -> dict[str, str | None]:
        """frames: (stream id, uint8 [H, W, 3], stream time, arrival on time.time()), one per stream.
        Returns per stream None (taken) or why the frame was refused ("unknown stream" first of all)."""
        result: dict[str, str | None] = {}
        batch = []
        for item in frames:
            sid = item[0]
            if sid not in self.cubes:
                result[sid] = "unknown stream"
            else:
                batch.append(item)
        while batch:
            try:
                closed = self.encoder.push([f[0] for f in batch], [f[1] for f in batch], [f[2] for f in batch])
                break
            except StreamInputError as e:  # refuse that stream's frame, run the others
                result[e.stream_id] = str(e)
                self.counters[e.stream_id].bad_frames += 1
                batch = [f for f in batch if f[0] != e.stream_id]
        else:
            return result
        for cube in closed:
            self.cubes[cube.stream_id].append(cube)
            self.counters[cube.stream_id].cubes += 1
        for sid in {c.stream_id for c in closed}:
            self._snapshot(sid)
        now = time.time()
        for sid, _, _, arrival in batch:
            c = self.counters[sid]
            c.frames += 1
            c.latencies = c.latencies[-999:] + [now - arrival]
            result[sid] = None
        return result

    def timeline(self, stream_id: str) -> list[dict]:
        """The stream's closed cubes without their tokens: index, start, end, frames, boundary score."""
        return [{"index": c.index, "start": c.start, "end": c.end, "num_frames": c.num_frames, "score": c.score}
                for c in self._get(stream_id)]

    def window(self, stream_id: str, start: float | None = None, end: float | None = None) -> list[Cube]:
        """The closed cubes overlapping [start, end] (open-ended where None), in time order."""
        return [c for c in self._get(stream_id)
                if (start is None or c.end >= start) and (end is None or c.start <= end)]

    def _get(self, stream_id: str) -> list[Cube]:
        try:
            return self.cubes[stream_id]
        except KeyError:
            raise KeyError(f"unknown stream {stream_id!r}") from None

    def _snapshot(self, stream_id: str) -> None:
        self.snapshots.save(stream_id, {
            "version": SNAPSHOT_VERSION,
            "encoder": self.encoder.get_state(stream_id),
            "cubes": [{"index": c.index, "start": c.start, "end": c.end, "num_frames": c.num_frames,
                       "tokens": c.tokens, "score": c.score} for c in self.cubes[stream_id]],
        })


def load_models(cfg) -> tuple[CubeEncoder, "object"]:
    """The profile's trained encoder and LLM; without a shipped checkpoint, untrained ones built from the
    seed (the same weights in every process, so the LLM reads what the encoder writes)."""
    from models.checkpoint import checkpoint_dir, load_model
    from models.llm import CubeLLM, build_tokenizer

    path = checkpoint_dir(cfg)
    if path is not None and (path / "model.safetensors").is_file():
        return load_model(cfg, path)
    from models.train import tokenizer_corpus

    torch.manual_seed(cfg.seed)
    encoder = CubeEncoder(cfg).eval()
    llm = CubeLLM(cfg, tokenizer=build_tokenizer(tokenizer_corpus(cfg))).eval()
    return encoder, llm
