"""Cubes without training: where a cube ends, and its frames pooled to K tokens.

Boundaries (`ChangeCubing`): a frame's pooled feature (the mean of its tokens, unit norm) is compared
with the open cube's mean feature; the change, 1 - cosine, closes the cube when it exceeds the mean plus
one standard deviation of the changes this stream has shown so far: a threshold that adapts to each
camera (a busy street changes more from frame to frame than an empty corridor), with no parameter fitted
to any data. A cube holds at least `min_len` frames and closes at `max_len` whatever happens. The change
statistics are exact over a stream's first `memory` frames and exponentially weighted after it, so the
threshold follows a scene that changes over the day.

Pooling (`pool_cube`): a cube's per-frame token grids [n, h, w, D] are averaged down to a fixed grid
[t, kh, kw] (K = t*kh*kw tokens), over space within each frame (LLaVA-Video's 2x2 average pooling of
video tokens, generalised to any target grid) and over time between frames; a grid of None keeps one
frame's tokens as they are (one frame per cube). Space is pooled as each frame arrives
(`pool_frame`), time when the cube closes (`pool_time`): averaging is separable, so this equals
pooling the whole cube at once.

Both forms are here side by side: `step` for streams, one frame at a time and many streams per call, and
`clip_cubes` over a whole clip; tests check that they cut the same cubes with the same tokens. Boundaries
compare frames pooled in space (what the cube keeps), in both forms.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.cubing import BatchedState

CHANGE_MEMORY = 1000  # frames over which the change statistics are exact (about 8 min at 2 fps)


def pool_frame(tokens: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """One frame's [h, w, D] token grid averaged to [kh, kw, D] (as it is where `grid` is None)."""
    if grid is None or tuple(tokens.shape[:2]) == tuple(grid):
        return tokens
    return F.adaptive_avg_pool2d(tokens.permute(2, 0, 1)[None], grid)[0].permute(1, 2, 0)


def pool_time(frames: torch.Tensor, t: int | None) -> torch.Tensor:
    """[n, h, w, D] frames of a cube averaged to [t, h, w, D] (as they are where `t` is None)."""
    if t is None or frames.shape[0] == t:
        return frames
    n, h, w, d = frames.shape
    x = frames.reshape(n, h * w * d).T[None]  # [1, h*w*D, n]
    return F.adaptive_avg_pool1d(x, t)[0].T.reshape(t, h, w, d)


def pool_cube(frames: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
    """A whole cube's [n, h, w, D] frame tokens averaged to the [t, kh, kw, D] grid in one pass."""
    if grid is None:
        return frames
    x = frames.permute(3, 0, 1, 2)[None]  # [1, D, n, h, w]
    return F.adaptive_avg_pool3d(x, grid)[0].permute(1, 2, 3, 0)


def frame_feature(tokens: torch.Tensor) -> torch.Tensor:
    """[..., h, w, D] -> [..., D]: the unit-norm mean token of a frame, what boundaries compare."""
    return F.normalize(tokens.float().mean(dim=(-3, -2)), dim=-1)


@dataclass
class ChangeState(BatchedState):
    """Per stream (batch of B): the open cube's feature sum and length, and the stream's change statistics."""
    open_sum: torch.Tensor  # [B, D] sum of the open cube's frame features
    length: torch.Tensor  # [B] long: frames in the open cube
    seen: torch.Tensor  # [B] float: changes counted (capped at CHANGE_MEMORY)
    mean: torch.Tensor  # [B] mean change
    var: torch.Tensor  # [B] variance of the changes

    FIELDS = ("open_sum", "length", "seen", "mean", "var")


class ChangeCubing:
    def __init__(self, min_len: int, max_len: int):
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        self.min_len, self.max_len = min_len, max_len

    @staticmethod
    def init_state(batch: int, dim: int, device=None) -> ChangeState:
        z = lambda: torch.zeros(batch, device=device)
        return ChangeState(open_sum=torch.zeros(batch, dim, device=device),
                           length=torch.zeros(batch, dtype=torch.long, device=device), seen=z(), mean=z(), var=z())

    def step(self, feature: torch.Tensor, state: ChangeState) -> tuple[torch.Tensor, torch.Tensor, ChangeState]:
        """One frame per stream: feature [B, D] (from `frame_feature`). Returns (closed [B]: the open cube
        ends before this frame, which opens the next; change [B]; the new state). `state` is left as it was."""
        has_open = state.length > 0
        change = torch.where(has_open, 1 - F.cosine_similarity(feature, state.open_sum, dim=-1),
                             torch.zeros_like(state.mean))
        threshold = state.mean + state.var.clamp_min(0).sqrt()
        by_change = has_open & (state.seen >= 2) & (state.length >= self.min_len) & (change > threshold)
        closed = by_change | (state.length >= self.max_len)
        # the change statistics: exact mean and variance while seen < CHANGE_MEMORY, exponentially weighted after
        seen = torch.where(has_open, (state.seen + 1).clamp_max(CHANGE_MEMORY), state.seen)
        a = torch.where(has_open, 1 / seen.clamp_min(1), torch.zeros_like(seen))
        delta = change - state.mean
        mean = state.mean + a * delta
        var = (1 - a) * (state.var + a * delta**2)
        open_sum = torch.where(closed[:, None], feature, state.open_sum + feature)
        length = torch.where(closed, torch.ones_like(state.length), state.length + 1)
        return closed, change, ChangeState(open_sum, length, seen, mean, var)

    def clip_cubes(self, frames: torch.Tensor, grid: tuple[int, int, int] | None = None) -> list[tuple[int, int, torch.Tensor]]:
        """A whole clip's [T, h, w, D] frame tokens -> its cubes as (first frame, end frame, pooled tokens),
        the last one closed at the clip's end. Every frame is pooled in space and compared at once; the
        decisions, each resting on the open cube, run along the clip."""
        pooled = frames if grid is None else \
            F.adaptive_avg_pool2d(frames.permute(0, 3, 1, 2), grid[1:]).permute(0, 2, 3, 1)
        features = frame_feature(pooled)
        state = self.init_state(1, frames.shape[-1], frames.device)
        starts = [0]
        for i in range(frames.shape[0]):
            closed, _, state = self.step(features[i:i + 1], state)
            if bool(closed):
                starts.append(i)
        bounds = list(zip(starts, starts[1:] + [frames.shape[0]]))
        return [(a, b, pool_cube(frames[a:b], grid)) for a, b in bounds]
