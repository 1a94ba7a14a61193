"""Qwen3-VL (transformers' `qwen3_vl`): Qwen2.5-VL's scheme (a patch merger, 3-D rope positions from the
model's own `get_rope_index`, image pads between vision start/end) with 16-px patches and "deepstack": the
vision tower also returns merged features of some of its middle layers, which the decoder adds to the
visual positions' hidden states in its first layers.

A frame's tokens here are the merger's output and every deepstack feature side by side ([h, w, D * (1 + n)]),
so pooling and the memory treat them as one token; the language side splits them again: the first D go into
the prompt's embeddings, the rest to the decoder as `deepstack_visual_embeds` at the visual positions.
"""
from __future__ import annotations

import torch

from models.vlm.base import Prompt
from models.vlm.qwen2_5_vl import Qwen2_5_VLLanguage, Qwen2_5_VLVision


class Qwen3VLVision(Qwen2_5_VLVision):
    def __init__(self, model, image_processor, max_pixels: int | None = None):
        super().__init__(model, image_processor, max_pixels)
        self.width = model.config.vision_config.out_hidden_size * (1 + len(model.config.vision_config.deepstack_visual_indexes))

    @staticmethod
    def tokens(out) -> torch.Tensor:
        """The merger's tokens with every deepstack feature beside them."""
        return torch.cat([out.pooler_output, *out.deepstack_features], dim=-1)


class Qwen3VLLanguage(Qwen2_5_VLLanguage):
    @property
    def token_width(self) -> int:
        return self.width * (1 + len(self.model.config.vision_config.deepstack_visual_indexes))

    def split_visual(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = self.width
        n = tokens.shape[-1] // d - 1
        return tokens[..., :d], tokens[..., d:].unflatten(-1, (n, d))

    def decoder_inputs(self, prompt: Prompt, length: int) -> dict:
        if prompt.visual_extra is None:
            return {}
        mask = torch.zeros(1, length, dtype=torch.bool, device=self.device)
        for s, e in prompt.cube_spans:
            mask[0, s:e] = True
        return {"visual_pos_masks": mask,
                "deepstack_visual_embeds": list(prompt.visual_extra.to(self.dtype).unbind(-2))}
