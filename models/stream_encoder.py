"""The per-stream state machine: frames in, one at a time per stream, closed cubes out.

Each stream keeps its own temporal (Mamba) state, cubing state and the tokens of its open cube; the
temporal state starts primed on the stream's first frame (`CubeEncoder.primed_state`);
`push` advances any number of streams by one frame each in one batched pass. Every input of a call is
checked before any state changes, so a bad frame or timestamp leaves every stream as it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from models.cube_encoder import CubeEncoder
from models.cubing import CubingState
from models.mamba import MambaState
from stream.cube import Cube

STATE_VERSION = 2


class StreamInputError(ValueError):
    """Input that a stream cannot take; nothing about any stream was changed."""

    def __init__(self, stream_id: str, message: str):
        super().__init__(f"stream {stream_id!r}: {message}")
        self.stream_id = stream_id


@dataclass
class _Stream:
    temporal: list[MambaState]  # each with N = P rows, one scan per spatial token
    cubing: CubingState  # batch of 1
    open_tokens: list[torch.Tensor]  # [P, D] per frame of the open cube
    open_start: float
    last_pts: float  # -inf before the first frame
    next_index: int


class StreamEncoder:
    def __init__(self, model: CubeEncoder, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.streams: dict[str, _Stream] = {}

    # -- streams ------------------------------------------------------------------------------------

    def add_stream(self, stream_id: str) -> None:
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"a stream id is a non-empty string, got {stream_id!r}")
        if stream_id in self.streams:
            raise ValueError(f"stream {stream_id!r} already exists")
        self.streams[stream_id] = self._fresh_state()

    def remove_stream(self, stream_id: str) -> Cube | None:
        """Forget a stream, returning its open cube closed (None if it had no open frames)."""
        cube = self.flush(stream_id)
        del self.streams[stream_id]
        return cube

    def flush(self, stream_id: str) -> Cube | None:
        """Close the stream's open cube now (a stream ending, or a caller that wants it); the stream goes on."""
        s = self._get(stream_id)
        if not s.open_tokens:
            return None
        (cube,) = self._close([_Closing(stream_id, s, s.open_tokens, s.open_start, s.last_pts, 1.0, True)])
        s.open_tokens = []
        s.cubing.length = torch.zeros_like(s.cubing.length)
        s.cubing.by_head = torch.zeros_like(s.cubing.by_head)  # the next cube opens at no event
        return cube

    def resume_after(self, stream_id: str, next_index: int, newest_time: float) -> None:
        """Drop the open cube (its frames are in a memory already) and go on after cube `next_index - 1`,
        which ended at `newest_time`: the stream's state came from before its memory's last cube. The
        recurrent state is kept; the next cube opens at no event."""
        s = self._get(stream_id)
        s.open_tokens, s.next_index, s.last_pts = [], next_index, max(s.last_pts, newest_time)
        s.cubing.length = torch.zeros_like(s.cubing.length)
        s.cubing.by_head = torch.zeros_like(s.cubing.by_head)

    # -- frames -------------------------------------------------------------------------------------

    @torch.no_grad()
    def push(self, stream_ids: Sequence[str], frames, timestamps: Sequence[float]) -> list[Cube]:
        """Advance each listed stream by one frame.

        frames: uint8 RGB, a [B, H, W, 3] array or tensor, or a list of [H, W, 3] (cameras may differ in size);
        timestamps: stream time in seconds, increasing within each stream. Returns the cubes that closed.
        """
        stream_ids, timestamps = list(stream_ids), list(timestamps)
        frames = check_push(self._get, stream_ids, frames, timestamps, self.device)
        m = self.model
        states = [self.streams[sid] for sid in stream_ids]
        for s, frame in zip(states, frames):
            if s.last_pts == -math.inf and (primed := m.primed_state(frame)) is not None:
                s.temporal = primed

        feats = m.vision(frames)  # [B, P, D]
        temporal = [MambaState(conv=torch.cat([s.temporal[i].conv for s in states]),
                               ssm=torch.cat([s.temporal[i].ssm for s in states]))
                    for i in range(len(m.temporal.layers))]
        feats, temporal = m.temporal.step(feats, temporal)
        cubing = CubingState.cat([s.cubing for s in states])
        closed, p, cubing = m.cubing.update(feats, cubing)
        forced = (closed & ~cubing.by_head).tolist()  # a close the head did not make: a cap's
        closed, p = closed.tolist(), p.tolist()

        P = m.num_tokens
        closing = []
        for b, (sid, s, pts) in enumerate(zip(stream_ids, states, timestamps)):
            s.temporal = [st[b * P:(b + 1) * P] for st in temporal]
            s.cubing = cubing[b]
            if closed[b]:
                closing.append(_Closing(sid, s, s.open_tokens, s.open_start, s.last_pts,
                                        1.0 if forced[b] else p[b], forced[b]))
                s.open_tokens = []
            if not s.open_tokens:
                s.open_start = float(pts)
            s.open_tokens.append(feats[b])
            s.last_pts = float(pts)
        return self._close(closing)

    def _close(self, closing: list[_Closing]) -> list[Cube]:
        if not closing:
            return []
        tokens = self.model.resampler([torch.stack(c.tokens) for c in closing]).float().cpu()
        cubes = []
        for c, tok in zip(closing, tokens):
            cubes.append(Cube(stream_id=c.stream_id, index=c.stream.next_index, start=c.start, end=c.end,
                              num_frames=len(c.tokens), tokens=tok, score=c.score, forced=c.forced))
            c.stream.next_index += 1
        return cubes

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self.streams[stream_id]
        except (KeyError, TypeError):
            raise StreamInputError(str(stream_id), "unknown stream") from None

    # -- state --------------------------------------------------------------------------------------

    def get_state(self, stream_id: str) -> dict:
        """The stream's whole state as plain data (tensors on CPU), for `stream.codec.packb`."""
        s = self._get(stream_id)
        cpu = lambda t: t.detach().cpu().clone()
        return {
            "version": STATE_VERSION,
            "temporal": [{"conv": cpu(st.conv), "ssm": cpu(st.ssm)} for st in s.temporal],
            "cubing": {f: cpu(getattr(s.cubing, f)) for f in CubingState.FIELDS},
            "open_tokens": cpu(torch.stack(s.open_tokens)) if s.open_tokens else None,
            "open_start": s.open_start, "last_pts": s.last_pts, "next_index": s.next_index,
        }

    def set_state(self, stream_id: str, state: dict) -> None:
        """Create or replace a stream from `get_state`'s output; a state that does not fit this model is refused."""
        ref = self._fresh_state()
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"state version {state['version']} (this build reads {STATE_VERSION})")
            temporal = [MambaState(conv=like(st["conv"], r.conv, self.device), ssm=like(st["ssm"], r.ssm, self.device))
                        for st, r in zip(state["temporal"], ref.temporal, strict=True)]
            cubing = CubingState(*(like(state["cubing"][f], getattr(ref.cubing, f), self.device) for f in CubingState.FIELDS))
            open_tokens = [] if state["open_tokens"] is None else \
                list(like(state["open_tokens"], ref.cubing.prev.expand(len(state["open_tokens"]), -1, -1), self.device))
            stream = _Stream(temporal=temporal, cubing=cubing, open_tokens=open_tokens,
                             open_start=float(state["open_start"]), last_pts=float(state["last_pts"]),
                             next_index=int(state["next_index"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"cannot restore stream {stream_id!r}: {e}") from e
        self.streams[stream_id] = stream

    def _fresh_state(self) -> _Stream:
        m = self.model
        return _Stream(temporal=m.temporal.init_state(1, m.num_tokens, self.device),
                       cubing=m.cubing.init_state(1, m.num_tokens, m.dim, self.device),
                       open_tokens=[], open_start=0.0, last_pts=-math.inf, next_index=0)


def like(value, ref: torch.Tensor, device) -> torch.Tensor:
    """A saved tensor, checked to have `ref`'s shape and dtype (a state of another model is refused), on `device`."""
    t = torch.as_tensor(value)
    if t.shape != ref.shape or t.dtype != ref.dtype:
        raise ValueError(f"expected a {ref.dtype} tensor of shape {tuple(ref.shape)}, got {t.dtype} {tuple(t.shape)}")
    return t.to(device)


def check_push(get, stream_ids: list[str], frames, timestamps: list, device: torch.device) -> list[torch.Tensor]:
    """Validate a whole push before anything changes (`get` looks a stream up, raising StreamInputError for
    an unknown one); returns the frames as uint8 tensors on `device`."""
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 4:
        frames = list(frames)
    if not isinstance(frames, (list, tuple)):
        raise ValueError(f"frames must be a [B, H, W, 3] batch or a list of [H, W, 3] frames, got {type(frames).__name__}")
    if not (len(stream_ids) == len(frames) == len(timestamps)):
        raise ValueError(f"got {len(stream_ids)} stream ids, {len(frames)} frames and {len(timestamps)} timestamps")
    if not stream_ids:
        raise ValueError("push needs at least one frame")
    if len(set(stream_ids)) != len(stream_ids):
        raise ValueError("a stream can take only one frame per push")
    out = []
    for sid, frame, pts in zip(stream_ids, frames, timestamps):
        s = get(sid)
        if not isinstance(frame, (np.ndarray, torch.Tensor)):
            raise StreamInputError(sid, f"a frame is an array, got {type(frame).__name__}")
        if frame.dtype not in (np.uint8, torch.uint8):
            raise StreamInputError(sid, f"frames are uint8 RGB, got dtype {frame.dtype}")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise StreamInputError(sid, f"a frame is [H, W, 3], got shape {tuple(frame.shape)}")
        if isinstance(pts, bool) or not isinstance(pts, (int, float, np.integer, np.floating)) or not math.isfinite(pts):
            raise StreamInputError(sid, f"a timestamp is a finite number of seconds, got {pts!r}")
        if pts <= s.last_pts:
            raise StreamInputError(sid, f"timestamp {pts} does not follow the previous one ({s.last_pts})")
        if isinstance(frame, np.ndarray):  # frames from Ray's object store are read-only views: copy those
            frame = np.ascontiguousarray(frame) if frame.flags.writeable else np.array(frame)
        out.append(torch.as_tensor(frame, device=device))
    return out


@dataclass
class _Closing:
    stream_id: str
    stream: _Stream
    tokens: list[torch.Tensor]
    start: float
    end: float
    score: float
    forced: bool
