"""Online Gumbel cubing: decide, frame by frame, where one cube ends and the next begins.

Quicksviewer's boundary head reads the momentum of frame features, d1 = F1 - F0,
di = m (Fi - Fi-1) + (1 - m) d(i-1) with m = 0.8 (causal), maps it linearly, averages over tokens and
scores it with LayerNorm -> Linear -> GELU -> Linear(D, 2). Quicksviewer picks the top-k boundaries
of a whole clip; that needs the future, so here each arriving frame either extends the open cube or
starts a new one (closing the open one), within [min_len, max_len] frames a cube. Training runs the
same causal rule over a clip (`forward`), with Gumbel noise and straight-through hard decisions, so that
what is trained is what runs (`update`).

One addition to Quicksviewer's head: LayerNorm throws away the momentum's magnitude, which is the
plainest sign of a scene starting to move, so its log-energy enters the first Linear beside the
normalised features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from configs import CubingConfig


class BatchedState:
    """A dataclass of per-stream tensors batched along their first dimension, its fields named in FIELDS."""

    FIELDS: tuple[str, ...]

    @classmethod
    def cat(cls, states: list) -> BatchedState:
        """Streams' states batched in one."""
        return cls(*(torch.cat([getattr(s, f) for s in states]) for f in cls.FIELDS))

    def __getitem__(self, b: int) -> BatchedState:
        """Stream b's state out of a batched one."""
        return type(self)(*(getattr(self, f)[b:b + 1] for f in self.FIELDS))


@dataclass
class CubingState(BatchedState):
    """Per stream, batched along the first dimension."""
    prev: torch.Tensor  # [B, P, D] features of the previous frame
    momentum: torch.Tensor  # [B, P, D]
    seen: torch.Tensor  # [B] int64 frames seen so far
    length: torch.Tensor  # [B] int64 frames in the open cube
    by_head: torch.Tensor  # [B] bool: the open cube was opened by the head (at an event), so event_max_len caps it

    FIELDS = ("prev", "momentum", "seen", "length", "by_head")


@dataclass
class CubingOutput:
    """The training form's result over a clip [B, T]."""
    starts: torch.Tensor  # [B, T] bool, True where a frame opens a new cube (always at t = 0)
    gate: torch.Tensor  # [B, T] 1.0 in value; carries the straight-through gradient of each free decision
    logits: torch.Tensor  # [B, T, 2] (extend, close); t = 0 has none and is zero
    p: torch.Tensor  # [B, T] boundary probability without noise (0 at t = 0)
    forced: torch.Tensor  # [B, T] bool, True where a frame opens a new cube because the one before hit its cap


class GumbelCubing(nn.Module):
    def __init__(self, dim: int, cfg: CubingConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim + 1, dim), nn.GELU(), nn.Linear(dim, 2))

    def bias(self) -> float:
        """Logit shift that moves the mean cube length from the trained target to the run-time one.

        A boundary head's logit carries the prior log-odds of a boundary, about 1/L a frame for mean
        length L; swapping the prior of the trained L for the asked one is a constant shift.
        """
        def logit(p): return math.log(p / (1 - p))
        return logit(1 / self.cfg.target_len) - logit(1 / self.cfg.trained_target_len)

    def score(self, momentum: torch.Tensor) -> torch.Tensor:
        """momentum [..., P, D] -> logits [..., 2] (extend, close), with the run-time bias on `close`."""
        h = self.proj(momentum).mean(dim=-2)
        energy = torch.log(momentum.pow(2).mean(dim=(-2, -1)) + 1e-6)[..., None]
        z = self.mlp(torch.cat([self.norm(h), energy], dim=-1))
        return z + torch.tensor([0.0, self.bias()], device=z.device, dtype=z.dtype)

    def init_state(self, batch: int, num_tokens: int, dim: int, device=None) -> CubingState:
        zeros = torch.zeros(batch, num_tokens, dim, device=device)
        return CubingState(prev=zeros, momentum=zeros.clone(), seen=torch.zeros(batch, dtype=torch.long, device=device),
                           length=torch.zeros(batch, dtype=torch.long, device=device),
                           by_head=torch.zeros(batch, dtype=torch.bool, device=device))

    def cap(self, by_head: torch.Tensor) -> torch.Tensor:
        """The most frames the open cube may hold: event_max_len where the head opened it, else max_len."""
        return torch.where(by_head, self.cfg.event_max_len or self.cfg.max_len, self.cfg.max_len)

    def _decide(self, free_close: torch.Tensor, length: torch.Tensor, seen: torch.Tensor,
                by_head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The causal rule: close when forced by the open cube's cap, or when the head says so and min_len is
        met. Returns (close, whether the head closed it: the next cube opens at an event)."""
        forced = length >= self.cap(by_head)
        head = (seen > 0) & ~forced & (length >= self.cfg.min_len) & free_close
        return (seen > 0) & forced | head, head

    def update(self, feature: torch.Tensor, state: CubingState) -> tuple[torch.Tensor, torch.Tensor, CubingState]:
        """One frame per stream, feature [B, P, D] -> (closed [B] bool, p [B], new state).

        `closed[b]` means the open cube ended before this frame, which now opens the next one.
        """
        delta = feature - state.prev
        first_delta = (state.seen == 1)[:, None, None]
        m = self.cfg.momentum
        momentum = torch.where(first_delta, delta, m * delta + (1 - m) * state.momentum)
        z = self.score(momentum)
        p = torch.where(state.seen > 0, torch.softmax(z, -1)[:, 1], torch.zeros_like(z[:, 1]))
        closed, head = self._decide(z[:, 1] > z[:, 0], state.length, state.seen, state.by_head)
        length = torch.where(closed, torch.ones_like(state.length), state.length + 1)
        by_head = torch.where(closed, head, state.by_head)
        momentum = torch.where((state.seen == 0)[:, None, None], torch.zeros_like(momentum), momentum)
        return closed, p, CubingState(prev=feature, momentum=momentum, seen=state.seen + 1, length=length, by_head=by_head)

    def forward(self, features: torch.Tensor, noise: float = 0.0) -> CubingOutput:
        """Training form over whole clips, features [B, T, P, D]; `noise` weighs the Gumbel noise (0 at inference)."""
        B, T = features.shape[:2]
        m = self.cfg.momentum
        delta = features[:, 1:] - features[:, :-1]  # [B, T-1, P, D]
        moms = [delta[:, 0]] if T > 1 else []
        for t in range(1, T - 1):
            moms.append(m * delta[:, t] + (1 - m) * moms[-1])
        z = torch.zeros(B, T, 2, device=features.device, dtype=features.dtype)
        if moms:
            z = torch.cat([z[:, :1], self.score(torch.stack(moms, dim=1))], dim=1)
        p = torch.softmax(z, -1)[..., 1] * (torch.arange(T, device=z.device) > 0)

        gumbel = -torch.log(-torch.log(torch.rand_like(z).clamp(1e-9, 1 - 1e-9))) if noise > 0 else torch.zeros_like(z)
        y_soft = torch.softmax((z + noise * gumbel) / self.cfg.tau, dim=-1)
        wants_close = y_soft[..., 1] > y_soft[..., 0]

        starts, gate, forced = [], [], []
        length = torch.zeros(B, dtype=torch.long, device=z.device)
        by_head = torch.zeros(B, dtype=torch.bool, device=z.device)
        for t in range(T):
            seen = torch.full_like(length, t)
            close, head = self._decide(wants_close[:, t], length, seen, by_head)
            free = (seen > 0) & (length >= self.cfg.min_len) & (length < self.cap(by_head))
            chosen = torch.where(close, y_soft[:, t, 1], y_soft[:, t, 0])
            straight_through = 1.0 + chosen - chosen.detach()  # value 1, gradient of the chosen probability
            gate.append(torch.where(free, straight_through, torch.ones_like(chosen)))
            starts.append(close | (seen == 0))
            forced.append(close & ~head)
            length = torch.where(close, torch.ones_like(length), length + 1)
            by_head = torch.where(close, head, by_head)
        return CubingOutput(starts=torch.stack(starts, 1), gate=torch.stack(gate, 1), logits=z, p=p,
                            forced=torch.stack(forced, 1))


def noise_weight(step: int, steps: int, anneal: float) -> float:
    """Quicksviewer: the Gumbel noise weight, cosine-annealed from 1.0 to 0.01 over the first `anneal` of the steps."""
    frac = min(1.0, step / max(1, anneal * steps))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac))
