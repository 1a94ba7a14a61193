"""Qwen2.5-VL (transformers' `qwen2_5_vl`): 14-px patches, a 3-D patch embedding over pairs of frames (a
still frame is its own pair, as the image processor writes it), a merger of 2x2 patches into one LLM
token, and 3-D (t, h, w) rope positions for visual tokens from the model's own `get_rope_index`.

A cube's token grid (t, h, w) enters as an image of that grid: its placeholder is t*h*w image-pad tokens
between the template's vision start/end, and `get_rope_index` gets its grid in patches (h and w times the
merge size), so pooled cubes take positions built exactly as the model builds an image's.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from models.vlm.base import LanguageSide, VisionSide


class Qwen2_5_VLVision(VisionSide):
    def __init__(self, model, image_processor, max_pixels: int | None = None):
        self.visual = model.model.visual
        self.merge = self.visual.spatial_merge_size
        self.processor = image_processor
        self.size = dict(image_processor.size) | ({"longest_edge": max_pixels} if max_pixels else {})
        self.width = model.config.vision_config.out_hidden_size

    @torch.no_grad()
    def encode(self, frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        p = next(self.visual.parameters())
        # device: a torchvision-backed processor resizes and normalizes there (the PIL one on the CPU)
        inp = self.processor(images=list(frames), size=self.size, device=p.device, return_tensors="pt")
        grid = inp["image_grid_thw"].to(p.device)
        out = self.tokens(self.visual(inp["pixel_values"].to(p.device, p.dtype), grid_thw=grid))
        m = self.merge
        sizes = (grid.prod(-1) // m**2).tolist()
        return [t.reshape(g[1] // m, g[2] // m, -1).float() for t, g in zip(out.split(sizes), grid.tolist())]


    @staticmethod
    def tokens(out) -> torch.Tensor:
        """The tower's output -> every frame's tokens, concatenated: the merger's."""
        return out.pooler_output


class Qwen2_5_VLLanguage(LanguageSide):
    image_mark = "<|vision_start|><|image_pad|><|vision_end|>"  # what the chat template writes for one image

    @property
    def decoder(self):
        return self.model.model.language_model

    def placeholder(self, grid: tuple[int, int, int]) -> list[int]:
        return [self.image_token_id] * int(np.prod(grid))

    def positions(self, input_ids: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        m = self.model.config.vision_config.spatial_merge_size
        thw = torch.tensor([(t, h * m, w * m) for t, h, w in grids], device=input_ids.device) if grids else None
        pos, _ = self.model.model.get_rope_index(input_ids, (input_ids == self.image_token_id).int(), image_grid_thw=thw)
        return pos[:, 0]


def drop_language(model) -> None:
    model.model.language_model = None
    model.lm_head = None


def drop_vision(model) -> None:
    model.model.visual = None
