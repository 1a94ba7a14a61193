"""Vision encoder: a Hugging Face vision tower, uint8 RGB frames -> patch tokens.

The default profile builds a tiny SigLIP tower from the config; a real profile loads any local checkpoint
with `from_pretrained` (e.g. SigLIP so400m/384: 27x27 = 729 patch tokens a frame). STORM's spatial
average pooling (2x2: 4x fewer tokens) is applied on the patch grid.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from transformers import AutoModel, SiglipVisionConfig, SiglipVisionModel

from configs import VisionConfig


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.pretrained:
            tower = AutoModel.from_pretrained(cfg.pretrained)
            tower = getattr(tower, "vision_model", tower)  # a full SigLIP/CLIP checkpoint: keep its vision half
        else:
            tower = SiglipVisionModel(SiglipVisionConfig(
                image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size, vision_use_head=False))
        self.tower = tower
        self.image_size = tower.config.image_size
        self.grid = self.image_size // tower.config.patch_size
        self.hidden_size = tower.config.hidden_size
        self.pool = cfg.pool
        if self.grid % self.pool:
            raise ValueError(f"vision.pool ({self.pool}) must divide the tower's patch grid ({self.grid})")
        self.out_grid = self.grid // self.pool
        if cfg.frozen:
            self.tower.requires_grad_(False)

    @property
    def num_tokens(self) -> int:
        return self.out_grid**2

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float [B, 3, S, S] in [-1, 1] (SigLIP's normalisation)."""
        x = rearrange(frames, "b h w c -> b c h w").float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        return x * 2.0 - 1.0

    def forward(self, frames: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """uint8 [B, H, W, 3], or a list of [H_i, W_i, 3] from cameras of different sizes -> patch tokens [B, P, D]."""
        pixels = self.preprocess(frames) if torch.is_tensor(frames) else torch.cat([self.preprocess(f[None]) for f in frames])
        dtype = next(self.tower.parameters()).dtype
        tokens = self.tower(pixel_values=pixels.to(dtype)).last_hidden_state  # [B, grid^2, D]
        if self.pool > 1:
            g = int(math.isqrt(tokens.shape[1]))
            tokens = rearrange(tokens, "b (h w) d -> b d h w", h=g)
            tokens = rearrange(F.avg_pool2d(tokens, self.pool), "b d h w -> b (h w) d")
        return tokens
