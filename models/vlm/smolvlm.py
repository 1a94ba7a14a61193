"""SmolVLM / SmolVLM2 (transformers' `smolvlm`) and Idefics3 (`idefics3`, whose classes SmolVLM's derive
from, under the same names): a SigLIP tower, a pixel-shuffle connector (`scale_factor`)
that folds each 2x2 block of patch tokens into one LLM token, and a Llama decoder with plain 1-D positions.

Frames are single images (no tiling: a camera frame is read whole at the processor's image size, which is
what the processor does with `do_image_splitting` off). A cube's token grid enters where the processor
writes one image: `<fake_token_around_image><global-img>`, its tokens at `<image>` ids, and
`<fake_token_around_image>`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from models.vlm.base import LanguageSide, VisionSide


class SmolVLMVision(VisionSide):
    def __init__(self, model, image_processor, max_pixels: int | None = None):
        self.model = model.model  # get_image_features: the tower and the connector
        self.processor = image_processor
        self.width = model.config.text_config.hidden_size

    @torch.no_grad()
    def encode(self, frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        p = next(self.model.vision_model.parameters())
        # device: a torchvision-backed processor resizes and normalizes there (the PIL one on the CPU)
        inp = self.processor(images=[[f] for f in frames], do_image_splitting=False, device=p.device,
                             return_tensors="pt")
        feats = self.model.get_image_features(inp["pixel_values"].to(p.device, p.dtype),
                                              inp["pixel_attention_mask"].to(p.device)).pooler_output
        out = []
        for f in feats:
            g = math.isqrt(f.shape[0])
            out.append(f.reshape(g, g, -1).float())
        return out


class SmolVLMLanguage(LanguageSide):
    image_mark = "<image>"  # what the chat template writes for one image

    @property
    def decoder(self):
        return self.model.model.text_model

    def placeholder(self, grid: tuple[int, int, int]) -> list[int]:
        fake, glob = self.tokenizer.convert_tokens_to_ids(["<fake_token_around_image>", "<global-img>"])
        return [fake, glob] + [self.image_token_id] * int(np.prod(grid)) + [fake]

    def positions(self, input_ids: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None]


def drop_language(model) -> None:
    model.model.text_model = None
    model.lm_head = None


def drop_vision(model) -> None:
    model.model.vision_model = None
    model.model.connector = None
