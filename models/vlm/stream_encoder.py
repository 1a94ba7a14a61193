"""The per-stream state machine for a pretrained VLM's vision side: frames in, closed cubes out.

`push` advances any number of streams by one frame each: their frames go through the VLM's image processor
and vision tower as one batch, each frame's tokens are pooled in space to the cube grid, an optional Mamba
temporal encoder steps over them (identity until trained), and the training-free change rule (or, trained by
stage 1, a Gumbel cubing head: models/vlm/stage1.py) decides whether the frame opens a new cube; a closed
cube's frames are pooled in time to its K tokens.
The same interface as `models.StreamEncoder` (streams, push, flush, get_state / set_state, resume_after),
so the encoder worker holds either.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from models.cubing import CubingState, GumbelCubing
from models.mamba import MambaState
from models.stream_encoder import StreamInputError, check_push, like
from models.temporal import MambaTemporalEncoder
from models.vlm.base import VisionSide
from models.vlm.cubes import ChangeCubing, ChangeState, frame_feature, pool_frame, pool_time
from models.vlm.resampler import PooledCubeResampler
from stream.cube import Cube

STATE_VERSION = 1


@dataclass
class _Stream:
    change: ChangeState  # batch of 1
    temporal: list[MambaState]  # empty without a temporal encoder
    open_frames: list[torch.Tensor]  # [kh, kw, D] per frame of the open cube
    open_start: float
    last_pts: float  # -inf before the first frame
    next_index: int
    cubing: CubingState | None = None  # the Gumbel head's state (batch of 1), where it decides the boundaries


class VLMStreamEncoder:
    def __init__(self, vision: VisionSide, grid: tuple[int, int, int] | None, min_len: int, max_len: int,
                 temporal: MambaTemporalEncoder | None = None, device: str | torch.device = "cpu",
                 head: GumbelCubing | None = None, resampler: PooledCubeResampler | None = None):
        """grid: the cube's (t, kh, kw) token grid, K = t*kh*kw; None keeps each frame's tokens as they are
        (then min_len = max_len = 1: one frame a cube). head: a trained Gumbel cubing head (stage 1) that
        decides the boundaries instead of the change rule, by its own online rule and lengths. resampler: what
        makes a closed cube's K tokens from its frames (default: pooling them in time)."""
        if grid is None and max_len != 1:
            raise ValueError("without a cube grid (no pooling) a cube is one frame: max_len must be 1")
        self.vision, self.grid = vision, grid
        self.cubing = ChangeCubing(min_len, max_len)
        self.temporal = temporal.to(device).eval() if temporal is not None else None
        self.head = head.to(device).eval() if head is not None else None
        self.resampler = resampler.to(device).eval() if resampler is not None else None
        if self.resampler is not None and (grid is None or self.resampler.grid != tuple(grid)):
            raise ValueError(f"the resampler makes cubes of grid {self.resampler.grid}, not {grid}")
        if self.head is not None and grid is None:
            raise ValueError("the cubing head reads pooled frames: give a cube grid")
        if self.temporal is not None and grid is None:
            raise ValueError("the temporal encoder runs on pooled frames: give a cube grid")
        self.device = torch.device(device)
        self.streams: dict[str, _Stream] = {}

    @property
    def num_tokens(self) -> int | None:
        """K, the tokens of a cube (None without a grid: a frame's own count)."""
        return None if self.grid is None else math.prod(self.grid)

    def fingerprint(self) -> str:
        """The vision side's weights, the grid, the cube lengths and the temporal encoder, hashed: a saved
        stream state resumes only under the same."""
        h = hashlib.sha256(repr((self.grid, self.cubing.min_len, self.cubing.max_len)).encode())
        modules = [m for m in vars(self.vision).values() if isinstance(m, torch.nn.Module)]
        modules += [m for m in (self.temporal, self.head, self.resampler) if m is not None]
        for m in modules:
            for name, t in sorted(m.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    # -- streams ------------------------------------------------------------------------------------

    def add_stream(self, stream_id: str) -> None:
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"a stream id is a non-empty string, got {stream_id!r}")
        if stream_id in self.streams:
            raise ValueError(f"stream {stream_id!r} already exists")
        self.streams[stream_id] = self._fresh()

    def _fresh(self) -> _Stream:
        width = self.vision.width
        temporal = [] if self.temporal is None else \
            self.temporal.init_state(1, self.grid[1] * self.grid[2], self.device)
        cubing = None if self.head is None else self.head.init_state(1, self.grid[1] * self.grid[2], width, self.device)
        return _Stream(change=ChangeCubing.init_state(1, width, self.device), temporal=temporal, open_frames=[],
                       open_start=0.0, last_pts=-math.inf, next_index=0, cubing=cubing)

    def remove_stream(self, stream_id: str) -> Cube | None:
        cube = self.flush(stream_id)
        del self.streams[stream_id]
        return cube

    def flush(self, stream_id: str) -> Cube | None:
        """Close the stream's open cube now; the stream goes on."""
        s = self._get(stream_id)
        if not s.open_frames:
            return None
        cube = self._close(stream_id, s, 1.0, True)
        self._cut(s)
        return cube

    def resume_after(self, stream_id: str, next_index: int, newest_time: float) -> None:
        """Drop the open cube (its frames are in a memory already) and go on after cube `next_index - 1`,
        which ended at `newest_time`: the stream's state came from before its memory's last cube."""
        s = self._get(stream_id)
        s.open_frames, s.next_index = [], next_index
        s.last_pts = max(s.last_pts, newest_time)
        self._cut(s)

    def _cut(self, s: _Stream) -> None:
        """No open cube: the change statistics kept; the head's next cube opens at no event."""
        s.change = _cut(s.change, self.vision.width, self.device)
        if s.cubing is not None:
            s.cubing = replace(s.cubing, length=torch.zeros_like(s.cubing.length),
                               by_head=torch.zeros_like(s.cubing.by_head))

    # -- frames -------------------------------------------------------------------------------------

    @torch.no_grad()
    def push(self, stream_ids: Sequence[str], frames, timestamps: Sequence[float]) -> list[Cube]:
        """Advance each listed stream by one frame (uint8 RGB [H, W, 3], sizes may differ); returns the
        cubes that closed."""
        stream_ids, timestamps = list(stream_ids), list(timestamps)
        frames = check_push(self._get, stream_ids, frames, timestamps, torch.device("cpu"))
        states = [self.streams[sid] for sid in stream_ids]
        tokens = self.vision.encode([f.numpy() for f in frames])
        pooled = [pool_frame(t.to(self.device), None if self.grid is None else self.grid[1:]) for t in tokens]
        if self.temporal is not None:
            x = torch.stack(pooled)  # [B, kh, kw, D]
            B, h, w, D = x.shape
            state = [MambaState(conv=torch.cat([s.temporal[i].conv for s in states]),
                                ssm=torch.cat([s.temporal[i].ssm for s in states]))
                     for i in range(len(self.temporal.layers))]
            y, state = self.temporal.step(x.reshape(B, h * w, D), state)
            pooled = list(y.reshape(B, h, w, D))
            for b, s in enumerate(states):
                s.temporal = [st[b * h * w:(b + 1) * h * w] for st in state]
        if self.head is not None:  # the trained head: its online rule, as stage 1 trained it
            x = torch.stack(pooled).flatten(1, 2)  # [B, P, D]
            closed, amount, cub = self.head.update(x, CubingState.cat([s.cubing for s in states]))
            by_cap = closed & ~cub.by_head
        else:
            features = torch.stack([frame_feature(p) for p in pooled])
            closed, amount, change = self.cubing.step(features, ChangeState.cat([s.change for s in states]))
        cubes = []
        for b, (sid, s, pts) in enumerate(zip(stream_ids, states, timestamps)):
            if self.head is not None:
                forced = bool(by_cap[b])
                s.cubing = cub[b]
            else:
                forced = len(s.open_frames) >= self.cubing.max_len
                s.change = change[b]
            if bool(closed[b]) and s.open_frames:
                cubes.append(self._close(sid, s, 1.0 if forced else min(1.0, float(amount[b])), forced))
            if not s.open_frames:
                s.open_start = float(pts)
            s.open_frames.append(pooled[b])
            s.last_pts = float(pts)
        return cubes

    def _close(self, stream_id: str, s: _Stream, score: float, forced: bool) -> Cube:
        frames = torch.stack(s.open_frames)
        tokens = self.resampler(frames) if self.resampler is not None else \
            pool_time(frames, None if self.grid is None else self.grid[0])
        cube = Cube(stream_id=stream_id, index=s.next_index, start=s.open_start, end=s.last_pts,
                    num_frames=len(s.open_frames), tokens=tokens.reshape(-1, tokens.shape[-1]).float().cpu(),
                    score=score, forced=forced)
        s.open_frames, s.next_index = [], s.next_index + 1
        return cube

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self.streams[stream_id]
        except (KeyError, TypeError):
            raise StreamInputError(str(stream_id), "unknown stream") from None

    # -- state --------------------------------------------------------------------------------------

    def get_state(self, stream_id: str) -> dict:
        s = self._get(stream_id)
        cpu = lambda t: t.detach().cpu().clone()
        return {"version": STATE_VERSION,
                "change": {f: cpu(getattr(s.change, f)) for f in ChangeState.FIELDS},
                "temporal": [{"conv": cpu(st.conv), "ssm": cpu(st.ssm)} for st in s.temporal],
                "open_frames": cpu(torch.stack(s.open_frames)) if s.open_frames else None,
                "open_start": s.open_start, "last_pts": s.last_pts, "next_index": s.next_index} | (
                    {} if s.cubing is None else {"cubing": {f: cpu(getattr(s.cubing, f)) for f in CubingState.FIELDS}})

    def set_state(self, stream_id: str, state: dict) -> None:
        ref = self._fresh()
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"state version {state['version']} (this build reads {STATE_VERSION})")
            change = ChangeState(*(like(state["change"][f], getattr(ref.change, f), self.device)
                                   for f in ChangeState.FIELDS))
            temporal = [MambaState(conv=like(st["conv"], r.conv, self.device), ssm=like(st["ssm"], r.ssm, self.device))
                        for st, r in zip(state["temporal"], ref.temporal, strict=True)]
            frames = state["open_frames"]
            if frames is not None:
                frames = torch.as_tensor(frames)
                if frames.dtype != torch.float32 or frames.ndim != 4 or frames.shape[-1] != self.vision.width or \
                        (self.grid is not None and tuple(frames.shape[1:3]) != tuple(self.grid[1:])):
                    raise ValueError(f"open frames of shape {tuple(frames.shape)} do not fit this model")
            cubing = None if ref.cubing is None else CubingState(
                *(like(state["cubing"][f], getattr(ref.cubing, f), self.device) for f in CubingState.FIELDS))
            s = _Stream(change=change, temporal=temporal,
                        open_frames=[] if frames is None else list(frames.to(self.device)),
                        open_start=float(state["open_start"]), last_pts=float(state["last_pts"]),
                        next_index=int(state["next_index"]), cubing=cubing)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"cannot restore stream {stream_id!r}: {e}") from e
        self.streams[stream_id] = s


def _cut(change: ChangeState, width: int, device) -> ChangeState:
    """No open cube, the stream's change statistics kept (a cube cut short by a flush or a resume)."""
    return replace(ChangeCubing.init_state(1, width, device), seen=change.seen, mean=change.mean, var=change.var)
