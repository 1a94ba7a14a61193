"""STORM's temporal encoder: residual pre-norm Mamba blocks, X(l) = X(l-1) + Mamba(Norm(X(l-1))).

The scan runs along time, separately for each spatial token, and is causal: a new frame costs one
recurrent `step` whatever the stream's age (STORM's causal streaming variant scored on par with the
bidirectional one).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from configs import TemporalConfig
from models.mamba import MambaBlock, MambaState


class MambaTemporalEncoder(nn.Module):
    def __init__(self, d_model: int, cfg: TemporalConfig, identity: bool = False):
        """identity: each block's output projection starts at zero, so the untrained encoder returns its input
        (in front of a pretrained VLM, it changes nothing until trained)."""
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(cfg.n_layers))
        self.layers = nn.ModuleList(
            MambaBlock(d_model, cfg.d_state, cfg.d_conv, cfg.expand, use_cuda_kernels=cfg.use_cuda_kernels)
            for _ in range(cfg.n_layers))
        if identity:
            for layer in self.layers:
                nn.init.zeros_(layer.out_proj.weight)

    def init_state(self, batch: int, num_tokens: int, device=None) -> list[MambaState]:
        """Zero state for `batch` streams of `num_tokens` spatial tokens each (one scan per token)."""
        return [layer.init_state(batch * num_tokens, device) for layer in self.layers]

    def forward(self, x: torch.Tensor, state: list[MambaState] | None = None) -> tuple[torch.Tensor, list[MambaState]]:
        """x [B, T, P, D] -> (y [B, T, P, D], state after frame T-1)."""
        B, T, P, D = x.shape
        h = rearrange(x, "b t p d -> (b p) t d")
        state = state or [None] * len(self.layers)
        new_state = []
        for norm, layer, s in zip(self.norms, self.layers, state):
            out, s = layer(norm(h), s)
            h = h + out
            new_state.append(s)
        return rearrange(h, "(b p) t d -> b t p d", b=B), new_state

    def step(self, x: torch.Tensor, state: list[MambaState]) -> tuple[torch.Tensor, list[MambaState]]:
        """x [B, P, D] one frame per stream -> (y [B, P, D], new state). `state` is left as it was."""
        B, P, D = x.shape
        h = rearrange(x, "b p d -> (b p) d")
        new_state = []
        for norm, layer, s in zip(self.norms, self.layers, state):
            out, s = layer.step(norm(h), s)
            h = h + out
            new_state.append(s)
        return rearrange(h, "(b p) d -> b p d", b=B), new_state
