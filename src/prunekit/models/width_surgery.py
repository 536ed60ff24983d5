"""Width surgery on a decoder block: keep some attention heads or FFN channels, install a folded
consumer. What differs between families (Phi-3's fused qkv and gate_up projections, which config
switch holds a bias) is read from the family table (`adapters.DecoderFamily`), so width methods
never name a projection.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunekit.models.adapters import DecoderFamily


def linear_like(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    """A new nn.Linear holding `weight` (and `bias`), on `like`'s device and in its dtype."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=like.weight.device, dtype=like.weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def install_consumer(module: nn.Module, name: str, weight: torch.Tensor, added_bias: torch.Tensor | None, use_bias: bool) -> None:
    """Replace `module.name` by a layer with the folded `weight`, its old bias plus `added_bias`
    (a zero bias where `use_bias` asks for one and there is none)."""
    old = getattr(module, name)
    device = weight.device
    bias = old.bias.detach().to(device, torch.float64) if old.bias is not None else None
    if added_bias is not None:
        bias = added_bias.to(device) if bias is None else bias + added_bias.to(device)
    if use_bias and bias is None:
        bias = torch.zeros(old.out_features, dtype=torch.float64, device=device)
    setattr(module, name, linear_like(weight.to(old.weight.dtype), bias.to(old.weight.dtype) if bias is not None else None, old))


def _sliced_rows(old: nn.Linear, rows: torch.Tensor, use_bias: bool) -> nn.Linear:
    bias = old.bias[rows] if old.bias is not None else (torch.zeros(rows.numel(), dtype=old.weight.dtype) if use_bias else None)
    return linear_like(old.weight[rows], bias, old)


def _fused(family: DecoderFamily, kind: str) -> bool:
    projections = family.attention_projections if kind == "attention" else family.mlp_projections
    return len(projections) == 2  # [qkv, o] or [gate_up, down]


def mlp_consumer(mlp: nn.Module, family: DecoderFamily) -> nn.Linear:
    return getattr(mlp, family.mlp_projections[-1])


def producer_weights(mlp: nn.Module, family: DecoderFamily) -> list[torch.Tensor]:
    """The [width, hidden] matrices that write the FFN channels (gate and up, split if fused)."""
    *producers, _ = family.mlp_projections
    weights = [getattr(mlp, name).weight for name in producers]
    if _fused(family, "mlp"):
        weights = list(weights[0].split(mlp_consumer(mlp, family).in_features, dim=0))
    return weights


def slice_mlp(
    mlp: nn.Module, family: DecoderFamily, keep: torch.Tensor, new_down: torch.Tensor, added_bias: torch.Tensor | None, use_bias: bool
) -> None:
    """Keep `keep` intermediate channels; install the folded down projection (and biases when used)."""
    *producers, consumer = family.mlp_projections
    width = getattr(mlp, consumer).in_features
    rows = torch.cat([keep, keep + width]) if _fused(family, "mlp") else keep  # fused gate_up holds gate, then up
    for name in producers:
        setattr(mlp, name, _sliced_rows(getattr(mlp, name), rows, use_bias))
    install_consumer(mlp, consumer, new_down, added_bias, use_bias)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = keep.numel()


def attention_consumer(attention: nn.Module, family: DecoderFamily) -> nn.Linear:
    return getattr(attention, family.attention_projections[-1])


def query_weight(attention: nn.Module, family: DecoderFamily) -> torch.Tensor:
    """The rows that write the query heads (the front of a fused qkv projection)."""
    first = getattr(attention, family.attention_projections[0]).weight
    return first[: attention_consumer(attention, family).in_features] if _fused(family, "attention") else first


def qkv_row_values(attention: nn.Module, family: DecoderFamily, per_row) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`per_row(weight)` (one value per output row) for the query, key and value projections,
    split out of a fused [q | k | v] projection where the family has one."""
    *producers, consumer = family.attention_projections
    if not _fused(family, "attention"):
        q, k, v = (per_row(getattr(attention, name).weight) for name in producers)
        return q, k, v
    rows = per_row(getattr(attention, producers[0]).weight)
    q_total = getattr(attention, consumer).in_features
    kv_total = (rows.numel() - q_total) // 2
    return rows[:q_total], rows[q_total : q_total + kv_total], rows[q_total + kv_total :]


def slice_attention(
    attention: nn.Module,
    family: DecoderFamily,
    q_rows: torch.Tensor,
    kv_rows: torch.Tensor,
    new_o: torch.Tensor,
    added_bias: torch.Tensor | None,
    use_bias: bool,
) -> None:
    """Keep the given query channels and KV rows; install the folded output projection (and biases when used).

    A fused [q | k | v] projection (Phi-3) reads its split sizes from its config at run time: the
    module gets its own config copy with its new head counts (`share_attention_config` hands the
    shared config back once every layer has the same counts)."""
    *producers, consumer = family.attention_projections
    if _fused(family, "attention"):
        q_total = getattr(attention, consumer).in_features
        kv_total = attention.num_key_value_heads * attention.head_dim
        rows = torch.cat([q_rows, q_total + kv_rows, q_total + kv_total + kv_rows])
        old = getattr(attention, producers[0])
        setattr(attention, producers[0], linear_like(old.weight[rows], old.bias[rows] if old.bias is not None else None, old))
        config = copy.copy(attention.config)
        config.num_attention_heads = q_rows.numel() // attention.head_dim
        config.num_key_value_heads = kv_rows.numel() // attention.head_dim
        attention.config = config
        attention.num_key_value_heads = config.num_key_value_heads
    else:
        for name, rows in zip(producers, (q_rows, kv_rows, kv_rows)):
            setattr(attention, name, _sliced_rows(getattr(attention, name), rows, use_bias))
    install_consumer(attention, consumer, new_o, added_bias, use_bias)


def share_attention_config(attentions: list[nn.Module], family: DecoderFamily, config) -> None:
    """Uniform widths: every fused attention reads the shared config again."""
    if _fused(family, "attention"):
        for attention in attentions:
            attention.config = config
