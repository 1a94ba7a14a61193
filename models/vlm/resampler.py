"""A trained cube resampler for a pretrained VLM (`model.resampler: attention`): Quicksviewer's resampler over a
closed cube, laid on top of the parameter-free pooling so that it starts as exactly that pooling.

A closed cube arrives as its frames pooled in space, [n, kh, kw, D] at the VLM's hidden width D (what the
language side takes as image tokens). Its K = t*kh*kw output tokens are

    pool_time(frames, t) + out(LayerNorm(attention(queries, keys, values)))

with one learnable query per output token, the keys and values the cube's n*kh*kw frame tokens (LayerNorm'd;
3-D sin-cos position codes of (frame in the cube, row, column), t:h:w = 2:3:3, added to the keys only), and
`out` a linear map initialised to zero: untrained, the resampler returns the pooled cube bit for bit, so a
pretrained VLM sees what it saw without one until stage 1 (models/vlm/stage1.py) trains it. The pooling keeps
the VLM's own token statistics as the base; attention adds what plain averaging loses (which frame, which
place, what moved).

The stream encoder (closing a cube) and stage 1's clip form (`VLMStage1Model.cubes`) call this one module on
the same frames: what is trained is what runs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from models.resampler import sincos_3d, sincos_split
from models.vlm.cubes import pool_time

HEAD_WIDTH = 64  # per attention head where the width divides by it (real VLMs' widths do); else one head


class PooledCubeResampler(nn.Module):
    def __init__(self, width: int, grid: tuple[int, int, int]):
        super().__init__()
        sincos_split(width)  # a width the position codes fit
        self.width, self.grid = width, tuple(grid)
        self.heads = width // HEAD_WIDTH if width % HEAD_WIDTH == 0 else 1
        self.queries = nn.Parameter(torch.randn(math.prod(grid), width) * width**-0.5)
        self.norm_in = nn.LayerNorm(width)
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.norm_out = nn.LayerNorm(width)
        self.out = nn.Linear(width, width)
        nn.init.zeros_(self.out.weight)  # the untrained resampler adds exactly nothing to the pooling
        nn.init.zeros_(self.out.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """A cube's [n, kh, kw, D] space-pooled frames -> its [t, kh, kw, D] tokens (in the frames' dtype)."""
        t, kh, kw = self.grid
        if tuple(frames.shape[1:]) != (kh, kw, self.width):
            raise ValueError(f"a cube of frames [n, {kh}, {kw}, {self.width}] expected, got {tuple(frames.shape)}")
        base = pool_time(frames, t)
        x = self.norm_in(frames.to(self.out.weight.dtype))
        values = rearrange(x, "n h w d -> (n h w) d")
        keys = values + sincos_3d(frames.shape[0], (kh, kw), self.width, x.device).to(x.dtype)
        split = lambda y: rearrange(y, "l (m e) -> m l e", m=self.heads)
        mixed = F.scaled_dot_product_attention(split(self.q(self.queries)), split(self.k(keys)), split(self.v(values)))
        delta = self.out(self.norm_out(rearrange(mixed, "m l e -> l (m e)")))
        return base + rearrange(delta, "(t h w) d -> t h w d", t=t, h=kh, w=kw).to(base.dtype)
