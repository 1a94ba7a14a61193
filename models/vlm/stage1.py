"""Stage 1 for a pretrained VLM (the `vlm` profile): the Mamba temporal encoder its stream encoder runs between
the vision side and the cube rule, trained on the VLM's own language-model loss, both halves of the VLM frozen.

The clip form is the stream form's (`VLMStreamEncoder.push`) over a whole clip: each frame's tokens pooled in
space to the cube grid, the Mamba scan along time (parallel here, recurrent there: the same numbers), the
parameter-free change rule's cuts (`ChangeCubing.clip_cubes`), pooling in time; the cubes enter the prompt as at
run time (the model's chat template, placeholders and positions), and the loss is the cross-entropy of the
answer's tokens and the end of the turn. What a checkpoint keeps is the temporal encoder alone, keyed
`encoder.temporal.*` as every stage-1 checkpoint (`models.checkpoint.STAGE1_PARTS`).

This profile has no cubing head or resampler to train: its cuts and pooling have no parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.stage1 import ClipSample
from models.temporal import MambaTemporalEncoder
from models.vlm.base import LanguageSide, VisionSide, VisualCube
from models.vlm.cubes import ChangeCubing, pool_frame

PREFIX = "encoder.temporal."


class VLMStage1Model(nn.Module):
    def __init__(self, vision: VisionSide, language: LanguageSide, temporal: MambaTemporalEncoder,
                 grid: tuple[int, int, int], min_len: int, max_len: int):
        super().__init__()
        self.vision, self.language, self.grid = vision, language, tuple(grid)
        self.temporal = temporal  # the only module registered here: what DDP syncs and the optimizer moves
        self.cubing = ChangeCubing(min_len, max_len)
        language.model.requires_grad_(False)

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {PREFIX + k: v.detach().clone().contiguous() for k, v in self.temporal.state_dict().items()}

    def load_trained(self, state: dict[str, torch.Tensor]) -> None:
        load_temporal(self.temporal, state)

    def cubes(self, sample: ClipSample) -> list[VisualCube]:
        """The clip's cubes as the live stream encoder would cut and pool them."""
        with torch.no_grad():  # the vision side is frozen
            tokens = self.vision.encode([f.numpy() for f in sample.frames.cpu()])
        pooled = torch.stack([pool_frame(t, self.grid[1:]) for t in tokens])  # [T, kh, kw, D]
        T, h, w, D = pooled.shape
        y, _ = self.temporal(pooled.reshape(1, T, h * w, D))
        y = y[0].reshape(T, h, w, D)
        return [VisualCube(sample.times[a], sample.times[b - 1], tok) for a, b, tok in self.cubing.clip_cubes(y, self.grid)]

    def forward(self, batch: list[ClipSample], noise: float = 0.0) -> dict[str, torch.Tensor]:
        """`noise` is the loop's Gumbel weight, unused here: this profile's cuts have no head."""
        lang, losses = self.language, []
        for s in batch:
            prompt = lang.prompt(self.cubes(s), s.question)
            answer = lang.ids(s.answer) + lang.eos_ids[:1]
            embeds, positions = lang._extend(prompt, answer)
            hidden = lang._run(embeds, positions, use_cache=False).last_hidden_state[0]
            logits = lang.lm_head(hidden[len(prompt.embeds) - 1:-1]).float()  # each answer token, predicted
            losses.append(F.cross_entropy(logits, torch.tensor(answer, device=logits.device)))
        lm = torch.stack(losses).mean()
        return {"lm": lm, "total": lm}


def load_temporal(temporal: MambaTemporalEncoder, state: dict[str, torch.Tensor]) -> None:
    """A VLM stage-1 checkpoint's temporal encoder (strict: other keys or shapes are an error)."""
    if stray := sorted(k for k in state if not k.startswith(PREFIX)):
        raise ValueError(f"not a VLM stage-1 checkpoint (the vlm profile trains only the temporal encoder): "
                         f"{', '.join(stray[:5])}")
    temporal.load_state_dict({k.removeprefix(PREFIX): v for k, v in state.items()})
