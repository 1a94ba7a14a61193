"""Cube resampler (Quicksviewer): K learnable queries cross-attend over all patch tokens of a cube.

3-D sin-cos position codes (time within the cube, row, column; dimensions split t:h:w = 2:3:3) are
added to the keys only, so the values stay the tokens themselves. LayerNorm and a linear map then
take the K outputs to the LLM's width.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange, repeat

from configs import ResamplerConfig


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """positions [N] -> [N, dim] (dim even): half sines, half cosines over geometric frequencies."""
    freqs = 1.0 / (10000 ** (torch.arange(dim // 2, dtype=torch.float32, device=positions.device) / (dim // 2)))
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_3d(frames: int, grid: int | tuple[int, int], dim: int, device=None) -> torch.Tensor:
    """Position codes for a cube of `frames` x grid tokens (grid: rows, columns; an int is a square) ->
    [frames * rows * columns, dim]."""
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    d_t, d_h, d_w = sincos_split(dim)
    t, h, w = torch.meshgrid(torch.arange(frames, device=device), torch.arange(rows, device=device),
                             torch.arange(cols, device=device), indexing="ij")
    return torch.cat([sincos_1d(t.flatten(), d_t), sincos_1d(h.flatten(), d_h), sincos_1d(w.flatten(), d_w)], dim=-1)


def sincos_split(dim: int) -> tuple[int, int, int]:
    """The dimensions of time, rows and columns in a position code of width `dim` (t:h:w = 2:3:3, each even)."""
    d_t = dim * 2 // 8 // 2 * 2
    d_h = dim * 3 // 8 // 2 * 2
    if dim % 2 or (dim - d_t - d_h) % 2:
        raise ValueError(f"resampler width {dim} cannot be split into even t:h:w position codes")
    return d_t, d_h, dim - d_t - d_h


class CubeResampler(nn.Module):
    def __init__(self, dim: int, grid: int, cfg: ResamplerConfig):
        super().__init__()
        sincos_split(dim)  # a width the position codes fit
        self.dim, self.grid = dim, grid
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, cfg.num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, cfg.out_dim)

    def forward(self, cubes: list[torch.Tensor]) -> torch.Tensor:
        """A list of cubes, each [n_i, P, D] (n_i frames, P = grid^2 tokens) -> [len(cubes), K, out_dim]."""
        n_max = max(c.shape[0] for c in cubes)
        P = self.grid**2
        values = torch.stack([nn.functional.pad(c, (0, 0, 0, 0, 0, n_max - c.shape[0])) for c in cubes])
        values = rearrange(values, "n t p d -> n (t p) d")
        keys = values + sincos_3d(n_max, self.grid, self.dim, values.device).to(values.dtype)
        lengths = torch.tensor([c.shape[0] for c in cubes], device=values.device)
        padding = repeat(torch.arange(n_max, device=values.device), "t -> n (t p)", n=len(cubes), p=P) >= lengths[:, None]
        q = repeat(self.queries, "k d -> n k d", n=len(cubes))
        out, _ = self.attn(q, keys, values, key_padding_mask=padding, need_weights=False)
        return self.out(self.norm(out))
