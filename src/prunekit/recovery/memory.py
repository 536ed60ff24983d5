"""How much memory a recovery run needs per process, worked out before it starts.

Weights of the student (all parameters, in their dtype), gradients of the trainable ones, AdamW's two fp32
moments, the frozen teacher, and activations of one micro-batch: per layer and token about 34 hidden-size
values plus 5 attention scores per head and key (Korthikanti et al., 2022, "Reducing Activation
Recomputation in Large Transformer Models"), kept for backward unless gradient checkpointing keeps only each
layer's input; plus the logits of student and teacher and the loss's softmax and gradient (four copies of
batch x sequence x vocabulary in fp32). A run that cannot fit stops before training, naming what would fit.
"""

from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass, replace

import torch

from prunekit.errors import PrunekitError

GIB = 2**30
SKIP_VARIABLE = "PRUNEKIT_SKIP_MEMORY_CHECK"  # set to 1 to train even when the estimate exceeds the device


@dataclass
class MemoryEstimate:
    """Bytes per process."""

    weights: int
    gradients: int
    optimizer: int
    teacher: int
    activations: int
    processes: int = 1
    sharded: bool = False  # weights, gradients and optimizer state split over the processes (FSDP)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.teacher + self.activations

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "teacher", "activations")
        return f"{size(self.total)} (" + ", ".join(f"{name} {size(getattr(self, name))}" for name in parts) + ")"


def size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / 2**20:.1f} MiB"


def _bytes(parameters) -> int:
    return sum(p.numel() * p.element_size() for p in parameters)


def activation_bytes(config, micro_batch: int, seq_len: int, checkpointing: bool, autocast_bf16: bool) -> int:
    """Activations kept for backward in one micro-batch (see the module's docstring)."""
    hidden = getattr(config, "hidden_size", 0)
    layers = getattr(config, "num_hidden_layers", 0)
    heads = getattr(config, "num_attention_heads", 1) or 1
    width = 2 if autocast_bf16 else 4
    tokens = micro_batch * seq_len
    per_layer = tokens * (34 * hidden + 5 * heads * seq_len) * width // 2  # the paper counts 16-bit values as 2 bytes
    kept = tokens * hidden * width * layers + per_layer if checkpointing else per_layer * layers
    logits = 4 * tokens * (getattr(config, "vocab_size", 0) or 0) * 4
    return int(kept + logits)


def estimate_memory(
    student,
    teacher,
    trainable: list,
    *,
    micro_batch: int,
    seq_len: int,
    checkpointing: bool,
    autocast_bf16: bool,
    processes: int = 1,
    sharded: bool = False,
    teacher_sharded: bool = True,
) -> MemoryEstimate:
    """What one process holds while training `trainable` parameters of `student` (distilling from `teacher`)."""
    share = processes if sharded else 1
    teacher_share = share if teacher_sharded else 1
    return MemoryEstimate(
        weights=_bytes(student.parameters()) // share,
        gradients=_bytes(trainable) // share,
        optimizer=2 * 4 * sum(p.numel() for p in trainable) // share,
        teacher=(_bytes(teacher.parameters()) // teacher_share) if teacher is not None and teacher is not student else 0,
        activations=activation_bytes(student.config, micro_batch, seq_len, checkpointing, autocast_bf16),
        processes=processes,
        sharded=sharded,
    )


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor: this process's shard
    return local.numel() * local.element_size()


def training_state_bytes(trainable: list, optimizer) -> int:
    """Measured: the bytes this process holds for the trainable weights, their gradients and the optimizer's state."""
    tensors = [*trainable, *(p.grad for p in trainable if p.grad is not None)]
    tensors += [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value) and value.dim() > 0]
    return sum(_local_bytes(t) for t in tensors)


def device_capacity(device: torch.device) -> int | None:
    """Bytes one process may use: the GPU's memory, or the machine's RAM shared by its processes."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return ram // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _alternatives(estimate: MemoryEstimate, capacity: int, lora_trainable: int, checkpointed: MemoryEstimate | None) -> list[str]:
    options = []
    if checkpointed is not None and checkpointed.total <= capacity:
        options.append(f"`gradient_checkpointing` ({size(checkpointed.total)})")
    lora = replace(estimate, gradients=lora_trainable * 4, optimizer=8 * lora_trainable)
    if lora.total <= capacity:
        options.append(f"`scope` lora ({size(lora.total)})")
    state = estimate.weights + estimate.gradients + estimate.optimizer + estimate.teacher
    if not estimate.sharded:
        for processes in (2, 4, 8, 16, 32, 64):
            if state // processes + estimate.activations <= capacity:
                options.append(f"`sharding` fsdp over {processes} processes (about {size(state // processes + estimate.activations)} each)")
                break
    return options


def check_fits(
    estimate: MemoryEstimate,
    device: torch.device,
    *,
    lora_trainable: int,
    checkpointed: MemoryEstimate | None = None,
    micro_batch: int = 1,
) -> None:
    """Stop before training when the estimate exceeds what the device holds, naming what would fit."""
    capacity = device_capacity(device)
    if capacity is None or estimate.total <= capacity or os.environ.get(SKIP_VARIABLE) == "1":
        return
    options = _alternatives(estimate, capacity, lora_trainable, checkpointed)
    if micro_batch > 1:
        options.append("a smaller `micro_batch_size`")
    where = f"{device}" if device.type == "cuda" else "this machine's memory"
    raise PrunekitError(
        f"recovery needs about {estimate.describe()} per process, more than {where} holds ({size(capacity)}); "
        f"what would fit: {', '.join(options) or 'a smaller model or more memory'} (or set {SKIP_VARIABLE}=1 to try anyway)"
    )


def measured_peak(device: torch.device) -> tuple[int, str]:
    """The run's peak: CUDA's peak allocation, or on the CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"
