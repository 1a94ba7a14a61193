"""One Mamba (S6) block with its two forms, after mamba-ssm's `mamba_simple.Mamba`.

`forward` runs a whole sequence (training); `step` advances one token from a state (streaming). Both
compute the same function: `step` over T tokens equals `forward` on the T-token sequence. Parameter
names and shapes are mamba-ssm's, so a state dict moves between this block, mamba-ssm and mambapy.

Pure PyTorch everywhere; on CUDA, with mamba-ssm installed, the fused kernels (`selective_scan_fn`,
`selective_state_update`) replace the reference scan. mamba-ssm cannot even be imported without its
CUDA extension, hence the guarded import.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

try:  # optional fast path
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
except Exception:  # ImportError, or an OSError/RuntimeError from a missing CUDA extension
    selective_scan_fn = selective_state_update = None

HAS_MAMBA_KERNELS = selective_scan_fn is not None


@dataclass
class MambaState:
    conv: torch.Tensor  # [N, d_inner, d_conv]: the last d_conv inputs of the depthwise causal conv
    ssm: torch.Tensor  # [N, d_inner, d_state]: the selective scan's hidden state

    def __getitem__(self, rows: slice) -> MambaState:
        """The state of some of the N sequences (one stream's spatial tokens out of a batch)."""
        return MambaState(conv=self.conv[rows], ssm=self.ssm[rows])


class MambaBlock(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_min: float = 1e-3, dt_max: float = 0.1, use_cuda_kernels: bool = True):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.use_cuda_kernels = use_cuda_kernels and HAS_MAMBA_KERNELS

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # mamba-ssm's initialisation: dt spread log-uniformly in [dt_min, dt_max] (bias = softplus^-1(dt)),
        # A = -[1..d_state] per channel (S4D-real), D = 1 (skip connection).
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> MambaState:
        device = device or self.in_proj.weight.device
        return MambaState(conv=torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
                          ssm=torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype))

    def forward(self, u: torch.Tensor, state: MambaState | None = None) -> tuple[torch.Tensor, MambaState]:
        """u [N, L, d_model] -> (y [N, L, d_model], state after the last token).

        `state` continues a sequence (None = from zeros), so a long stream can be run chunk by chunk.
        """
        N, L, _ = u.shape
        state = state or self.init_state(N, u.device)
        x, z = rearrange(self.in_proj(u), "n l (two e) -> two n e l", two=2)
        # The causal conv sees the previous d_conv-1 inputs from the state, then this chunk.
        x_full = torch.cat([state.conv[:, :, 1:], x], dim=-1)  # [N, E, d_conv-1+L]
        new_conv = x_full[:, :, -self.d_conv:]
        x = F.conv1d(x_full, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)  # [N, E, L]
        x = F.silu(x)

        dt, B, C = torch.split(self.x_proj(rearrange(x, "n e l -> n l e")), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.dt_proj.weight @ dt.transpose(1, 2)  # [N, E, L]; the bias is added inside the scan
        A = -torch.exp(self.A_log.float())
        B, C = rearrange(B, "n l s -> n s l").contiguous(), rearrange(C, "n l s -> n s l").contiguous()

        if self.use_cuda_kernels and u.is_cuda and not state.ssm.any():
            y, last = selective_scan_fn(x, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                                        delta_softplus=True, return_last_state=True)
        else:
            y, last = self._scan(x, dt, A, B, C, z, state.ssm)
        return self.out_proj(rearrange(y, "n e l -> n l e")), MambaState(conv=new_conv, ssm=last)

    def _scan(self, x, dt, A, B, C, z, h):
        """Reference selective scan (mamba-ssm's `selective_scan_ref`), sequential in time.

        Time leads every per-step tensor and is walked with `unbind`: slicing a trailing time axis
        would make autograd allocate a full-size gradient for every step.
        """
        dt = F.softplus(dt + self.dt_proj.bias[None, :, None])  # [N, E, L]
        dA = torch.exp(torch.einsum("nel,es->lnes", dt, A))  # [L, N, E, S]
        dBx = torch.einsum("nel,nsl,nel->lnes", dt, B, x)
        h = h.float()
        hs = []
        for a, b in zip(dA.unbind(0), dBx.unbind(0)):
            h = a * h + b
            hs.append(h)
        y = torch.einsum("lnes,nsl->nel", torch.stack(hs), C) + x * self.D[None, :, None]
        return y * F.silu(z), h

    def step(self, u: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """u [N, d_model] one token per sequence -> (y [N, d_model], new state). The input state is not modified."""
        x, z = self.in_proj(u).chunk(2, dim=-1)  # [N, E]
        conv = torch.cat([state.conv[:, :, 1:], x[:, :, None]], dim=-1)
        x = F.silu(torch.einsum("nek,ek->ne", conv, self.conv1d.weight[:, 0, :]) + self.conv1d.bias)

        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_proj.weight.T  # [N, E], bias added below / inside the kernel
        A = -torch.exp(self.A_log.float())
        if self.use_cuda_kernels and u.is_cuda:
            ssm = state.ssm.clone()  # the kernel updates in place; our states are values
            y = selective_state_update(ssm, x, dt, A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True)
        else:
            dt = F.softplus(dt + self.dt_proj.bias)
            dA = torch.exp(dt[:, :, None] * A)  # [N, E, S]
            ssm = dA * state.ssm + (dt * x)[:, :, None] * B[:, None, :]
            y = torch.einsum("nes,ns->ne", ssm, C) + self.D * x
            y = y * F.silu(z)
        return self.out_proj(y), MambaState(conv=conv, ssm=ssm)
