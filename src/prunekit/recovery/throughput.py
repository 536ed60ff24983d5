"""How fast recovery trains and how much of the accelerator it uses: model flops and utilisation.

Distillation costs about 6 N_student flops per token (forward and backward) plus 2 N_teacher for
the teacher's forward, N counting the weights used in matmuls (the input embedding lookup is not
one). Model-flops utilisation (MFU, as in PaLM) divides the flops achieved by the accelerator's
dense bf16/fp16 peak, known here for common data-centre and workstation GPUs; elsewhere it is None.
"""

from __future__ import annotations

import torch

# Dense (no sparsity) bf16 tensor-core peak in FLOP/s, by a substring of torch.cuda.get_device_name.
BF16_PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 6000 Ada", 364e12),
    ("A6000", 155e12),
    ("V100", 125e12),
)


def matmul_parameters(model) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (unless tied to the head)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = embedding is not None and head is not None and embedding.weight is head.weight
    skip = {id(embedding.weight)} if embedding is not None and not tied else set()
    seen, total = set(), 0
    for param in model.parameters():
        if id(param) not in seen and id(param) not in skip:
            seen.add(id(param))
            total += param.numel()
    return total


def distillation_flops_per_token(student, teacher=None) -> float:
    return 6.0 * matmul_parameters(student) + (2.0 * matmul_parameters(teacher) if teacher is not None else 0.0)


def peak_flops(device: torch.device, mixed_precision: str) -> float | None:
    """The device's dense half-precision peak, when training runs in bf16/fp16 on a GPU we know."""
    if device.type != "cuda" or mixed_precision not in ("bf16", "fp16"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in BF16_PEAK_FLOPS:
        if key in name:
            return flops
    return None


def utilisation(tokens_per_second: float, flops_per_token: float, peak: float | None) -> float | None:
    return tokens_per_second * flops_per_token / peak if peak else None
