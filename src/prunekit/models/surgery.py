"""Structural edits that keep the model and its config consistent.

A removed block must leave behind a model whose config (num_hidden_layers, per-layer fields such as
`layer_types`) and attention `layer_idx` values match the remaining blocks, or the KV cache and a
reload through `from_pretrained` would silently disagree with the weights.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter


def validate_block_indices(indices: Iterable[int], num_blocks: int) -> list[int]:
    """Sorted unique indices, or a one-line error for anything impossible."""
    chosen = sorted(set(int(i) for i in indices))
    if not chosen:
        raise PrunekitError("no blocks to remove; ask for at least one (`remove` N with N >= 1)")
    bad = [i for i in chosen if i < 0 or i >= num_blocks]
    if bad:
        raise PrunekitError(f"block indices {bad} out of range: the model has blocks 0..{num_blocks - 1}")
    if len(chosen) >= num_blocks:
        raise PrunekitError(f"cannot remove {len(chosen)} of {num_blocks} blocks; at least one must remain")
    return chosen


def renumber_layer_indices(layers: nn.ModuleList) -> None:
    """Set `layer_idx` on every submodule of block k to k, so each block uses its own cache slot."""
    for new_index, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index


def remove_blocks(model: nn.Module, indices: Iterable[int]) -> list[int]:
    """Remove decoder blocks in place; returns the original indices that were kept."""
    adapter = ModelAdapter(model)
    num_blocks = adapter.num_blocks
    removed = set(validate_block_indices(indices, num_blocks))
    kept = [i for i in range(num_blocks) if i not in removed]
    adapter.layers = nn.ModuleList([adapter.layers[i] for i in kept])
    renumber_layer_indices(adapter.layers)
    config = model.config
    for field_name in adapter.family.per_layer_config_fields:
        values = getattr(config, field_name, None)
        if isinstance(values, (list, tuple)) and len(values) == num_blocks:
            setattr(config, field_name, [values[i] for i in kept])
    config.num_hidden_layers = len(kept)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and hasattr(generation_config, "num_hidden_layers"):
        generation_config.num_hidden_layers = len(kept)
    return kept
