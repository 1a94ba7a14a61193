"""FSDP for stage 1 (`cubestream train-stage1 --strategy fsdp`): torch's FSDP2 (`fully_shard`) over the trained
modules and the frozen VLM they run, for a VLM too big to keep whole on every GPU.

Every parameter, frozen or trained, is sharded along dim 0 over the workers (the default process group: gloo
on CPU, NCCL on GPUs). Each transformer block (the classes a Hugging Face model lists in `_no_split_modules`,
the unit its own sharding tools wrap) is a group of its own, all-gathered just before its forward and backward
and freed after; everything else (embeddings, norms, the LM head, the vision tower's stem and merger, and the
small trained modules) is one root group, gathered for the whole step. Gradients are averaged over the
workers as DDP averages them, so one FSDP step is one DDP step on the same data (a test checks it).

The frozen modules a stage-1 model runs are not necessarily its submodules (`frozen_modules()`: the VLM's two
halves are held beside it, so that its state is its trained modules alone); one root holds both, so that one
FSDP root drives all the groups. Ray Train's own `prepare_model(parallel_strategy="fsdp")` wraps FSDP1 and
refuses CPU workers, and would shard only the trained modules.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor


class _Root(nn.Module):
    """The trained model and the frozen modules its forward runs, under one FSDP root; calls the model."""

    def __init__(self, model: nn.Module, frozen: Sequence[nn.Module]):
        super().__init__()
        self.model, self.frozen = model, nn.ModuleList(frozen)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def shard(model: nn.Module, frozen: Sequence[nn.Module], device: torch.device) -> nn.Module:
    """Shard `model` and the `frozen` modules its forward runs over the default process group, moving the shards
    to `device`; returns the module to call in `model`'s place. `model`'s own parameters become sharded DTensors:
    read them with `full_state`."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    root = _Root(model, frozen)
    blocks = {name for m in root.modules() for name in getattr(m, "_no_split_modules", None) or ()}
    for m in reversed(list(root.modules())):  # bottom-up, as fully_shard wants
        if type(m).__name__ in blocks:
            fully_shard(m, mesh=mesh)
    fully_shard(root, mesh=mesh)
    # a trained module a rank's samples did not reach (a one-frame clip makes no boundary decision) still takes
    # part in the gradient reduction, with zeros, as DDP's find_unused_parameters does
    root.set_reduce_scatter_unused_params(True)
    return root


def full_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its sharded (DTensor) values gathered whole, on the CPU. A collective under FSDP: every
    rank calls it."""
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).cpu() for k, v in state.items()}


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimizer's state, whole and keyed by parameter name (the same under DDP and FSDP: a run resumes under
    either). A collective: every rank calls it; rank 0 gets the state (the others may get an empty one)."""
    return get_optimizer_state_dict(model, opt, options=_FULL)


def load_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer_state`'s result into `opt` on every rank (each keeps its shard under FSDP)."""
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
