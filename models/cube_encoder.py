"""The model that turns frames into cubes of tokens: vision tower -> Mamba along time -> cubing -> resampler.

`encode_clip` is the parallel (training) form over a whole clip; `StreamEncoder` drives the same
modules one frame at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from configs import Config
from models.cubing import CubingOutput, GumbelCubing
from models.mamba import MambaState
from models.resampler import CubeResampler
from models.temporal import MambaTemporalEncoder
from models.vision import VisionEncoder


@dataclass
class ClipCubes:
    """Cubes of one clip from the parallel form."""
    starts: list[int]  # first frame of each cube
    lengths: list[int]
    tokens: torch.Tensor  # [num_cubes, K, out_dim]
    scores: list[float]  # boundary probability that closed each cube (1.0 where forced, or the clip's end)
    cubing: CubingOutput  # for the training losses
    features: torch.Tensor  # [T, P, D] frame tokens after the temporal encoder, for training probes


class CubeEncoder(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionEncoder(cfg.vision)
        dim = self.vision.hidden_size
        self.temporal = MambaTemporalEncoder(dim, cfg.temporal)
        self.cubing = GumbelCubing(dim, cfg.cubing)
        self.resampler = CubeResampler(dim, self.vision.out_grid, cfg.resampler)

    @property
    def dim(self) -> int:
        return self.vision.hidden_size

    @property
    def num_tokens(self) -> int:
        return self.vision.num_tokens

    def encode_clip(self, frames: torch.Tensor, noise: float = 0.0, state: list[MambaState] | None = None) -> ClipCubes:
        """One clip, uint8 frames [T, H, W, 3] -> its cubes, every cube closed (the last at the clip's end).

        `state`: the temporal state the clip's scan continues from (`temporal_state` of the frames before
        it), as a live stream's does; None starts from zeros."""
        feats = self.vision(frames)[None]  # [1, T, P, D]
        feats, _ = self.temporal(feats, state)
        cub = self.cubing(feats, noise=noise)
        gated = feats * cub.gate[..., None, None]  # value unchanged; lets the cube tokens' loss reach the boundary head
        starts = cub.starts[0].nonzero().flatten().tolist()
        ends = starts[1:] + [frames.shape[0]]
        lengths = [e - s for s, e in zip(starts, ends)]
        tokens = self.resampler([gated[0, s:e] for s, e in zip(starts, ends)])
        p = cub.p[0]
        forced = cub.forced[0]
        scores = [p[e].item() if e < frames.shape[0] and not forced[e] else 1.0 for e in ends]
        return ClipCubes(starts=starts, lengths=lengths, tokens=tokens, scores=scores, cubing=cub, features=feats[0])

    @torch.no_grad()
    def primed_state(self, frame: torch.Tensor) -> list[MambaState] | None:
        """The temporal state after one uint8 frame [H, W, 3] held for `temporal.prime_frames` frames: what a
        new stream's scan starts from, a scene seen unchanged for a while (None where prime_frames is 0)."""
        n = self.cfg.temporal.prime_frames
        if n == 0:
            return None
        feats = self.vision(frame[None])  # [1, P, D]: the same frame each time, its tower run once
        _, state = self.temporal(feats[:, None].expand(-1, n, -1, -1))
        return state

    @torch.no_grad()
    def temporal_state(self, frames: torch.Tensor) -> list[list[MambaState]]:
        """The temporal state after each of B runs of uint8 frames [B, T, H, W, 3], one list of layer states a run
        (no gradient: a clip's history, which `encode_clip` continues from)."""
        B, T = frames.shape[:2]
        feats = self.vision(frames.flatten(0, 1)).unflatten(0, (B, T))  # [B, T, P, D]
        _, state = self.temporal(feats)
        P = feats.shape[2]
        return [[s[b * P:(b + 1) * P] for s in state] for b in range(B)]
