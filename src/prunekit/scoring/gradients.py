"""Taylor importance of width units: sum |w * dL/dw| over the weights each unit owns.

One optional gradient pass of the language-model loss over the calibration windows, on the dense
model before any pruning (LLM-Pruner's first-order element-wise score, summed per unit). It holds a
gradient for every weight at once, so it needs about twice the model's memory, unlike the
activation criteria that stream one block at a time.
"""

from __future__ import annotations

import torch

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter
from prunekit.models.width_surgery import attention_consumer, qkv_row_values


def _owned(weight: torch.nn.Parameter, dim: int) -> torch.Tensor:
    """|w * g| summed over `dim` (1: per output row, 0: per input column), in float64 on CPU."""
    if weight.grad is None:
        return torch.zeros(weight.shape[1 - dim], dtype=torch.float64)
    return (weight.detach() * weight.grad).abs().sum(dim).to("cpu", torch.float64)


def taylor_unit_scores(model, windows, *, device=None, heads: bool = True) -> list[dict[str, torch.Tensor]]:
    """Per layer {"ffn": one score per intermediate channel, "heads": one per input channel of the attention's output projection}.

    A KV head's own rows (k_proj, v_proj) are shared by its query heads, so their score is spread
    evenly over the query channels of its group; a whole group's sum is then its full score.
    """
    adapter = ModelAdapter(model)
    family = adapter.family
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    previous = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    owned = []
    for layer in adapter.layers:
        mlp, attention = getattr(layer, family.mlp_attr), getattr(layer, family.attention_attr)
        for name in family.mlp_projections:
            getattr(mlp, name).weight.requires_grad_(True)
        if heads:
            for name in family.attention_projections:
                getattr(attention, name).weight.requires_grad_(True)
        owned.append((mlp, attention))
    count = windows.input_ids.shape[0]
    try:
        for row in range(count):
            batch = windows.input_ids[row : row + 1].to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            if not torch.isfinite(loss):
                raise PrunekitError(
                    "the Taylor gradient pass produced a non-finite loss; use another criterion or check the model in float32"
                )
            (loss / count).backward()
        scores = []
        *producers, consumer = family.mlp_projections
        for mlp, attention in owned:
            width = getattr(mlp, consumer).in_features
            ffn = _owned(getattr(mlp, consumer).weight, 0)
            for name in producers:
                rows = _owned(getattr(mlp, name).weight, 1)
                ffn = ffn + (rows.view(-1, width).sum(0) if rows.numel() != width else rows)  # fused gate_up: two halves
            entry = {"ffn": ffn}
            if heads:
                head_dim = attention.head_dim
                q_rows, k_rows, v_rows = qkv_row_values(attention, family, lambda weight: _owned(weight, 1))
                channels = q_rows + _owned(attention_consumer(attention, family).weight, 0)
                kv = (k_rows + v_rows).view(-1, 1, head_dim)
                per_group = channels.numel() // (kv.shape[0] * head_dim)
                entry["heads"] = channels + (kv / per_group).expand(-1, per_group, -1).reshape(-1)
            scores.append(entry)
        return scores
    finally:
        for name, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(previous[name])
        model.train(was_training)
