"""Stage 1 for a frozen VLM (Quicksviewer's first stage, STORM's recipe): the streaming modules learn from the
LLM's language-model loss on answers and captions while the vision tower and the LLM stay as loaded.

Trained: the Mamba temporal encoder, the cubing head (Gumbel noise with straight-through hard decisions, the
same causal online rule as at run time, a rate term holding the mean cube length at its target and
Quicksviewer's 0.001 mean |z|), the resampler and, optionally, the projector. What training keeps is those
modules alone (`trained_state`, keyed as `model.safetensors` keys them: `encoder.temporal.*`, ...,
`projector.*`), a small checkpoint that `models.checkpoint.load_stage1` lays over the profile's frozen weights
(the `stage1:` key of a profile).

`Stage1Model` is one instance of what the distributed loop (`actors/train_ray.py`) trains: a module whose
forward takes a batch and the Gumbel noise weight and returns its losses (with "total"), and which names
the state a checkpoint keeps (`trained_state` / `load_trained`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from configs import Config
from models.checkpoint import STAGE1_PARTS, apply_stage1
from models.cube_encoder import CubeEncoder
from models.llm import CubeLLM

Z_WEIGHT = 0.001  # Quicksviewer's weight of mean |z| of the boundary logits


@dataclass
class ClipSample:
    """One training example: a clip's frames up to the moment a question is asked, and the answer (or caption)."""
    frames: torch.Tensor  # uint8 [T, H, W, 3]
    times: list[float]  # stream time (s) of each frame
    question: str
    answer: str


class Stage1Model(nn.Module):
    TRAINED = tuple(p for p in STAGE1_PARTS if p.startswith("encoder."))

    def __init__(self, cfg: Config, encoder: CubeEncoder, llm: CubeLLM, train_projector: bool = True,
                 rate_weight: float = 0.1):
        super().__init__()
        self.cfg, self.encoder, self.llm, self.rate_weight = cfg, encoder, llm, rate_weight
        self.prefixes = self.TRAINED + (("llm.projector.",) if train_projector else ())
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith(self.prefixes))

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The trained modules' weights, keyed as in `model.safetensors` (`encoder.*`, `projector.*`)."""
        return {k.removeprefix("llm."): v.detach().clone().contiguous() for k, v in self.state_dict().items()
                if k.startswith(self.prefixes)}

    def load_trained(self, state: dict[str, torch.Tensor]) -> None:
        apply_stage1(self.encoder, self.llm, state)

    def frozen_modules(self) -> list[nn.Module]:
        """Frozen modules the forward runs beside this module's own: none (the tower and LLM are submodules)."""
        return []

    def forward(self, batch: list[ClipSample], noise: float) -> dict[str, torch.Tensor]:
        prompts, rate, z = [], [], []
        for s in batch:
            out = self.encoder.encode_clip(s.frames, noise=noise)
            cubes = [(s.times[a], s.times[a + n - 1], tok) for a, n, tok in zip(out.starts, out.lengths, out.tokens)]
            prompts.append(self.llm.prompt(cubes, s.question, now=s.times[-1]))
            if len(s.times) > 1:  # a one-frame clip makes no boundary decision
                rate.append((out.cubing.p[0, 1:].mean() - 1.0 / self.cfg.cubing.trained_target_len) ** 2)
                z.append(out.cubing.logits[0, 1:].abs().mean())
        parts = {"lm": self.llm.loss(prompts, [s.answer for s in batch])}
        zero = parts["lm"].new_zeros(())
        parts["rate"] = torch.stack(rate).mean() if rate else zero
        parts["z"] = torch.stack(z).mean() if z else zero
        parts["total"] = parts["lm"] + self.rate_weight * parts["rate"] + Z_WEIGHT * parts["z"]
        return parts

