"""The plain object the encoder actor wraps: a StreamEncoder over many streams, each with its rolling memory.

Nothing here imports Ray: the actors in `actors/runtime.py` only move calls and data to this object,
so the logic is tested directly.

Durability, per stream, in the stream's MemoryStore folder under `runtime.snapshot_dir`:
  - every closed cube is appended (checksummed, fsynced) to the store's log before anything else happens
    to it, so a cube, once closed, survives any crash; the store compacts the log into snapshots itself;
  - the encoder's recurrent state (`StreamEncoder.get_state`) is replaced atomically in `encoder.bin`
    after every `runtime.state_every` closed cubes and at every compaction.
On restore, a state saved after the memory's last cube resumes exactly: only the frames of the open cube
that came after it are lost. An older state (a crash between a cube's log record and the state's save,
or state_every > 1) keeps its recurrent state but drops its open cube, whose frames the memory already
holds, and goes on after the memory's last cube in index and in time.
"""
from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from configs import Config
from models import CubeEncoder, StreamEncoder, StreamInputError
from models.vlm.stream_encoder import VLMStreamEncoder
from stream.codec import CodecError, packb, unpackb
from stream.ids import check_stream_id
from stream.memory import MemoryEntry, RejectedCube, RollingMemory, make_thumbnail
from stream.snapshot import MemoryStore, SnapshotError, frame, records, write_atomic

log = logging.getLogger(__name__)

ENCODER_STATE = "encoder.bin"  # beside the store's files, which it ignores


@dataclass
class StreamCounters:
    frames: int = 0  # frames encoded
    cubes: int = 0  # cubes closed (restored ones included)
    restored_cubes: int = 0  # cubes this worker read back from the stream's store
    bad_frames: int = 0  # frames refused (bad shape, timestamp out of order)
    rejected_cubes: int = 0  # closed cubes the memory refused (a bug, or a thumbnail over the size limit)
    latencies: list[float] = field(default_factory=list)  # frame arrival -> in memory (s), the last 1000


@dataclass
class _Stream:
    memory: RollingMemory
    store: MemoryStore
    counters: StreamCounters
    last_frame: np.ndarray | None = None  # the previous frame: the last one of a cube that closes on the next
    since_state: int = 0  # cubes closed since the encoder state was saved


class EncoderWorker:
    """A StreamEncoder over many streams, their rolling memories and their durable stores.

    `push` takes at most one frame per stream and runs them as one batch; a frame a stream cannot take
    is refused on its own without holding up the rest.
    """

    def __init__(self, model: CubeEncoder | VLMStreamEncoder, cfg: Config, device: str = "cpu"):
        """model: the trained CubeEncoder (run by a StreamEncoder here), or a pretrained VLM's stream encoder."""
        if isinstance(model, VLMStreamEncoder):
            self.encoder, self.model_id = model, model.fingerprint()
        else:
            self.encoder, self.model_id = StreamEncoder(model, device), model_id(model)
        self.cfg = cfg
        self.root = Path(cfg.runtime.snapshot_dir).expanduser()
        self.streams: dict[str, _Stream] = {}

    def add_stream(self, stream_id: str) -> float | None:
        """Start (or take over) a stream, restoring it from its store. Returns the stream time of its last
        frame (None if none), which the stream's next frame must follow."""
        check_stream_id(stream_id)
        if stream_id not in self.streams:
            store = MemoryStore(self.root, stream_id, self.cfg.memory)
            memory = store.load().memory
            self._restore_encoder(stream_id, store, memory)
            n = memory.last_index + 1
            self.streams[stream_id] = _Stream(memory, store, StreamCounters(cubes=n, restored_cubes=n))
        last = self.encoder.streams[stream_id].last_pts
        return None if last == -math.inf else last

    def _restore_encoder(self, stream_id: str, store: MemoryStore, memory: RollingMemory) -> None:
        state = self._read_state(store)
        if state is not None and state.pop("model", None) != self.model_id:
            # another model's recurrent state can have the very same shapes: it would be read as garbage
            log.warning("%s: the saved encoder state is another model's; the stream's encoder starts afresh", store.dir)
            state = None
        if state is not None:
            try:
                self.encoder.set_state(stream_id, state)
            except ValueError as e:  # not a state of this model
                log.warning("%s: %s; the stream's encoder starts afresh after its memory", store.dir, e)
                state = None
        if state is None:
            self.encoder.add_stream(stream_id)
        elif state["next_index"] > memory.last_index:
            return  # saved after the memory's last cube: resume exactly
        self.encoder.resume_after(stream_id, memory.last_index + 1,
                                  memory.newest_time if memory.newest_time is not None else -math.inf)

    @staticmethod
    def _read_state(store: MemoryStore) -> dict | None:
        path = store.dir / ENCODER_STATE
        try:
            (payload,) = records(path)
            return unpackb(payload)
        except FileNotFoundError:
            return None
        except (SnapshotError, CodecError, ValueError) as e:  # ValueError: not exactly one record
            log.warning("%s: %s; the stream's encoder starts afresh after its memory", path, e)
            return None

    def _save_state(self, stream_id: str) -> None:
        s = self.streams[stream_id]
        state = self.encoder.get_state(stream_id) | {"model": self.model_id}
        write_atomic(s.store.dir / ENCODER_STATE, frame(packb(state)))
        s.since_state = 0

    def remove_stream(self, stream_id: str, forget: bool = True) -> None:
        """Stop encoding a stream; `forget` also deletes its files (else another worker may take it over)."""
        s = self.streams.get(stream_id)
        if s is not None:
            if not forget:
                self._save_state(stream_id)  # the next owner resumes exactly here
            s.store.close()
            del self.streams[stream_id], self.encoder.streams[stream_id]
        if forget:
            shutil.rmtree(MemoryStore(self.root, stream_id, self.cfg.memory).dir, ignore_errors=True)

    def push(self, frames: list[tuple[str, np.ndarray, float, float]]) -> dict[str, str | None]:
        """frames: (stream id, uint8 [H, W, 3], stream time, arrival on time.time()), one per stream.
        Returns per stream None (taken) or why the frame was refused ("unknown stream" first of all)."""
        result: dict[str, str | None] = {}
        batch = []
        for item in frames:
            if item[0] not in self.streams:
                result[item[0]] = "unknown stream"
            else:
                batch.append(item)
        while batch:
            try:
                closed = self.encoder.push([f[0] for f in batch], [f[1] for f in batch], [f[2] for f in batch])
                break
            except StreamInputError as e:  # refuse that stream's frame, run the others
                result[e.stream_id] = str(e)
                self.streams[e.stream_id].counters.bad_frames += 1
                batch = [f for f in batch if f[0] != e.stream_id]
        else:
            return result
        for cube in closed:  # at most one per stream: one frame each
            self._keep(cube)
        now = time.time()
        for sid, image, _, arrival in batch:
            s = self.streams[sid]
            s.last_frame = np.array(image)  # its own copy: a view would keep the whole batch it came in alive
            c = s.counters
            c.frames += 1
            c.latencies = c.latencies[-999:] + [now - arrival]
            result[sid] = None
        return result

    def _keep(self, cube) -> None:
        s = self.streams[cube.stream_id]
        m = self.cfg.memory
        thumbnail = None if s.last_frame is None else make_thumbnail(s.last_frame, m.thumbnail_size, m.thumbnail_quality)
        try:
            s.store.add(s.memory, cube, thumbnail)
        except RejectedCube as e:  # the other streams of the batch go on
            log.error("%s", e)
            s.counters.rejected_cubes += 1
            return
        s.counters.cubes += 1
        s.since_state += 1
        if s.store.pending == 0 or s.since_state >= self.cfg.runtime.state_every:  # pending 0: it just compacted
            self._save_state(cube.stream_id)

    # ---- reads ----

    def timeline(self, stream_id: str) -> list[dict]:
        """The stream's memory without tokens, oldest first: each entry's id, level (0: a cube as it closed,
        L: about 2^L cubes merged), time span, frames, cubes and whether it has a thumbnail."""
        return [{"id": e.id, "level": e.level, "start": e.start, "end": e.end, "num_frames": e.num_frames,
                 "cubes": e.cubes, "thumbnail": e.thumbnail is not None} for e in self._get(stream_id).memory]

    def window(self, stream_id: str, start: float | None = None, end: float | None = None) -> list[MemoryEntry]:
        """The memory entries overlapping [start, end] (open-ended where None), in time order, without
        thumbnails (what the LLM reads)."""
        entries = self._get(stream_id).memory.window(-math.inf if start is None else start,
                                                     math.inf if end is None else end)
        return [replace(e, thumbnail=None) for e in entries]

    def thumbnail(self, stream_id: str, entry_id: int) -> bytes | None:
        """The JPEG of a memory entry; None if it has none or the memory holds no such entry (any more)."""
        memory = self._get(stream_id).memory
        try:
            return memory.get(entry_id).thumbnail
        except KeyError:
            return None

    def stats(self, stream_ids: list[str] | None = None) -> dict[str, dict]:
        """Per stream (those of `stream_ids` it has; None: all): its counters and its memory's size."""
        ids = self.streams if stream_ids is None else [sid for sid in stream_ids if sid in self.streams]
        return {sid: vars(s.counters) | {"latencies": list(s.counters.latencies), "entries": len(s.memory),
                                         "memory_tokens": s.memory.tokens, "levels": len(s.memory.levels())}
                for sid, s in ((sid, self.streams[sid]) for sid in ids)}

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self.streams[stream_id]
        except KeyError:
            raise KeyError(f"unknown stream {stream_id!r}") from None


def model_id(model: torch.nn.Module) -> str:
    """A fingerprint of the weights, saved with each stream's encoder state."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def load_models(cfg) -> tuple[CubeEncoder, "object"]:
    """The profile's trained encoder and LLM; without a checkpoint, untrained ones built from the seed (the
    same weights in every process, so the LLM reads what the encoder writes), whose tokenizer, where the
    profile names no pretrained LLM, knows only the prompt's own words."""
    from models.checkpoint import checkpoint_dir, load_model, load_stage1, under_configs
    from models.llm import CubeLLM, build_tokenizer, time_text

    path = checkpoint_dir(cfg)
    if path is not None and (path / "model.safetensors").is_file():
        encoder, llm = load_model(cfg, path)
    else:
        torch.manual_seed(cfg.seed)
        encoder = CubeEncoder(cfg).eval()
        tokenizer = None if cfg.llm.pretrained else build_tokenizer([time_text(0.0), "question : answer :"])
        llm = CubeLLM(cfg, tokenizer=tokenizer).eval()
    if cfg.stage1:  # trained streaming modules over the profile's weights
        load_stage1(encoder, llm, under_configs(cfg.stage1))
    return encoder, llm
