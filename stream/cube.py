"""The record a stream's encoder emits each time it closes a cube."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Cube:
    stream_id: str
    index: int  # 0, 1, 2, ... within the stream, in closing order
    start: float  # stream time (s) of the cube's first frame
    end: float  # stream time (s) of its last frame
    num_frames: int
    tokens: torch.Tensor  # [K, D_out] resampled tokens, float32, on CPU
    score: float  # boundary probability when it closed (1.0 when forced by max_len or a flush)
    forced: bool = False  # closed by max_len or a flush, not by the boundary head: no claim of an event
