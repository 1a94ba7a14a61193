"""Stage 1 for a pretrained VLM (the `vlm` profile): the streaming modules its stream encoder runs between the
vision side and the prompt, trained on the VLM's own language-model loss, both halves of the VLM frozen: the
Mamba temporal encoder (`model.temporal_layers`); with `model.boundaries: head`, the Gumbel cubing head
(Quicksviewer's, with its causal online rule, Gumbel noise, straight-through hard decisions, the rate term and
0.001 mean |z|) in place of the training-free change rule; with `model.resampler: attention`, the cube
resampler over the pooling (models/vlm/resampler.py).

The clip form is the stream form's (`VLMStreamEncoder.push`) over a whole clip: each frame's tokens pooled in
space to the cube grid, the Mamba scan along time (parallel here, recurrent there: the same numbers), the
cuts (the head's `forward` here, its `update` there; or the change rule's `clip_cubes`), each cube's frames
pooled in time (LLaVA-Video's pooling) or resampled (the one resampler module both forms call); the
cubes enter the prompt as at run time (the model's chat template, placeholders and positions), and the loss is
the cross-entropy of the answer's tokens and the end of the turn. A checkpoint keeps those modules, keyed
`encoder.temporal.*`, `encoder.cubing.*` and `encoder.resampler.*` as every stage-1 checkpoint
(`models.checkpoint.STAGE1_PARTS`). The projector is the VLM's own merger, kept frozen.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.cubing import GumbelCubing
from models.stage1 import Z_WEIGHT, ClipSample
from models.temporal import MambaTemporalEncoder
from models.vlm.base import LanguageSide, VisionSide, VisualCube
from models.vlm.cubes import ChangeCubing, pool_cube, pool_frame
from models.vlm.resampler import PooledCubeResampler

# this model's trained modules and their keys in a stage-1 checkpoint
CHECKPOINT_KEYS = {"temporal": "encoder.temporal.", "head": "encoder.cubing.", "resampler": "encoder.resampler."}


class VLMStage1Model(nn.Module):
    def __init__(self, vision: VisionSide, language: LanguageSide, temporal: MambaTemporalEncoder | None,
                 head: GumbelCubing | None, grid: tuple[int, int, int], min_len: int, max_len: int,
                 rate_weight: float = 0.1, resampler: PooledCubeResampler | None = None):
        super().__init__()
        if temporal is None and head is None and resampler is None:
            raise ValueError("nothing to train: set model.temporal_layers, model.boundaries: head and/or "
                             "model.resampler: attention")
        self.vision, self.language, self.grid, self.rate_weight = vision, language, tuple(grid), rate_weight
        # the modules registered here are the trained ones: what DDP syncs and the optimizer moves
        self.temporal, self.head, self.resampler = temporal, head, resampler
        self.change = ChangeCubing(min_len, max_len)
        for m in self.frozen_modules():
            m.requires_grad_(False)

    def trained_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in self.state_dict().items():
            module, name = k.split(".", 1)
            out[CHECKPOINT_KEYS[module] + name] = v.detach().clone().contiguous()
        return out

    def load_trained(self, state: dict[str, torch.Tensor]) -> None:
        own = {}
        for k, v in state.items():
            module = next((m for m, prefix in CHECKPOINT_KEYS.items() if k.startswith(prefix)), None)
            if module is None:
                raise ValueError(f"not a weight of this stage-1 model: {k}")
            own[f"{module}.{k.removeprefix(CHECKPOINT_KEYS[module])}"] = v
        self.load_state_dict(own)  # strict: a checkpoint of other modules or shapes is an error

    def frozen_modules(self) -> list[nn.Module]:
        """The VLM's frozen modules that the forward runs, held beside this module rather than in it (its state is
        the trained modules alone), for data-parallel training to shard with it."""
        return [m for m in vars(self.vision).values() if isinstance(m, nn.Module)] + [self.language.model]

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """A cube's [n, kh, kw, D] space-pooled frames -> its [t, kh, kw, D] tokens, as the live encoder closes it."""
        return self.resampler(frames) if self.resampler is not None else pool_cube(frames, self.grid)

    def cubes(self, sample: ClipSample, noise: float = 0.0) -> tuple[list[VisualCube], dict[str, torch.Tensor]]:
        """The clip's cubes as the live stream encoder would cut and pool them, and the head's loss terms."""
        with torch.no_grad():  # the vision side is frozen
            tokens = self.vision.encode([f.numpy() for f in sample.frames.cpu()])
        y = torch.stack([pool_frame(t, self.grid[1:]) for t in tokens])  # [T, kh, kw, D]
        T, h, w, D = y.shape
        if self.temporal is not None:
            y = self.temporal(y.reshape(1, T, h * w, D))[0][0].reshape(T, h, w, D)
        if self.head is None:
            cuts = [(a, b) for a, b, _ in self.change.clip_cubes(y, self.grid)]
            return [VisualCube(sample.times[a], sample.times[b - 1], self.pool(y[a:b])) for a, b in cuts], {}
        out = self.head(y.reshape(1, T, h * w, D), noise=noise)
        gated = y * out.gate[0][:, None, None, None]  # value unchanged; the answer's loss reaches the head
        starts = out.starts[0].nonzero().flatten().tolist()
        bounds = list(zip(starts, starts[1:] + [T]))
        terms = {}
        if T > 1:
            terms = {"rate": (out.p[0, 1:].mean() - 1.0 / self.head.cfg.trained_target_len) ** 2,
                     "z": out.logits[0, 1:].abs().mean()}
        return [VisualCube(sample.times[a], sample.times[b - 1], self.pool(gated[a:b])) for a, b in bounds], terms

    def forward(self, batch: list[ClipSample], noise: float = 0.0) -> dict[str, torch.Tensor]:
        lang, losses, terms = self.language, [], {}
        for s in batch:
            cubes, extra = self.cubes(s, noise)
            for k, v in extra.items():
                terms.setdefault(k, []).append(v)
            prompt = lang.prompt(cubes, s.question)
            answer = lang.ids(s.answer) + lang.eos_ids[:1]
            embeds, positions = lang._extend(prompt, answer)
            hidden = lang._run(embeds, positions, use_cache=False).last_hidden_state[0]
            logits = lang.lm_head(hidden[len(prompt.embeds) - 1:-1]).float()  # each answer token, predicted
            losses.append(F.cross_entropy(logits, torch.tensor(answer, device=logits.device)))
        parts = {"lm": torch.stack(losses).mean()} | {k: torch.stack(v).mean() for k, v in terms.items()}
        parts["total"] = parts["lm"] + self.rate_weight * parts.get("rate", 0.0) + Z_WEIGHT * parts.get("z", 0.0)
        return parts
