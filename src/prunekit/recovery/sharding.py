"""Fully sharded recovery (torch FSDP2, `fully_shard`): weights, gradients, AdamW state and the teacher split
over the processes of a launch, each decoder block gathered only while it computes.

The caller's model is never wrapped: training runs on a structural copy whose parameters are this process's
shards (made on the meta device, so no second full copy is ever allocated), while the caller's own parameter
storage is released. When training ends the full weights are gathered back into the caller's parameters, so
the student is trained in place and the teacher comes back unchanged, both plain `transformers` models again.

torch's engine is used directly rather than through accelerate, because accelerate only selects FSDP on GPU
launches; this way the same code runs, and is tested, on CPU processes (gloo) and on GPUs (NCCL).
Run checkpoints are torch distributed checkpoints: each process writes its own shards, and a sharded run
resumes on the same number of processes.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter


def sharding_from_launch() -> str | None:
    """'fsdp' under `accelerate launch` with an FSDP config (it sets ACCELERATE_USE_FSDP), else None."""
    return "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes") else None


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder blocks, each sharded as one unit (gathered for its own forward and backward)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = list(ModelAdapter(base).layers)
    seen: set[int] = set()
    for layer in layers:
        ids = {id(p) for p in layer.parameters()}
        if ids & seen:
            raise PrunekitError(
                "sharded recovery cannot split blocks that share weights (FlexiGPT's shared blocks); "
                "use `sharding` none (their adapters are small enough to train unsharded)"
            )
        seen |= ids
    return layers


def _meta_copy(model: nn.Module) -> nn.Module:
    """The same modules with parameters on the meta device (no storage); buffers are copied."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def check_can_shard() -> None:
    """Refuse sharding in a process no launcher started (there is nothing to shard over), before a run writes anything."""
    if not torch.distributed.is_initialized() and "MASTER_ADDR" not in os.environ:
        raise PrunekitError(
            "sharded recovery needs a multi-process launch (accelerate launch or torchrun); one process may use `sharding` none"
        )


def _mesh(device: torch.device):
    from torch.distributed.device_mesh import init_device_mesh

    if not torch.distributed.is_initialized():
        check_can_shard()
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")  # one process under a launcher
    return init_device_mesh(device.type, (torch.distributed.get_world_size(),))


@dataclass
class ShardedModel:
    """`owner` is the caller's model (its parameters emptied while training); `sharded` trains in its place."""

    owner: nn.Module
    sharded: nn.Module

    def gather(self) -> None:
        """All-gather the full weights into the owner's parameters (every process gets them) and drop the shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.sharded, options=StateDictOptions(full_state_dict=True))
        with torch.no_grad():
            for name, param in self.owner.named_parameters():  # emptied, each still on its own device
                param.data = full[name].detach().to(param.device, copy=True)
        self.sharded = None


def shard(model: nn.Module, device: torch.device) -> ShardedModel:
    """A sharded copy of `model` on `device` (its parameters' requires_grad kept), holding this process's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh(device)
    sharded = _meta_copy(model)
    for block in _blocks(sharded):
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    sharded.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():  # to_empty left them uninitialised; they are not sharded
            sharded.get_buffer(name).copy_(buffer)
    set_model_state_dict(sharded, model.state_dict(), options=StateDictOptions(full_state_dict=True))
    for param in model.parameters():  # the caller's full copy is not needed until the weights come back
        param.data = torch.empty(0, dtype=param.dtype, device=param.device)
    return ShardedModel(model, sharded)


def clip_gradients(parameters: list, max_norm: float) -> torch.Tensor:
    """Clip by the global norm over every process's shards (the norm of the whole gradient, as unsharded)."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


class ShardedTrainingState:
    """Model shards, optimizer shards and schedule as one torch distributed checkpoint (the `Stateful` protocol)."""

    def __init__(self, model: nn.Module, optimizer, scheduler):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optimizer": optimizer_state, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save(self, directory) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save({"run": self}, checkpoint_id=str(directory))

    def load(self, directory) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.load({"run": self}, checkpoint_id=str(directory))
