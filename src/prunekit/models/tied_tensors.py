"""Tensors stored once under several names (tied embeddings): what safetensors writes and what a load may miss."""

from __future__ import annotations


def unique_tensors(weights: dict) -> dict:
    """Drop later names of tensors sharing storage (tied embeddings): safetensors stores each once."""
    seen: set[tuple] = set()
    out = {}
    for name, tensor in weights.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out[name] = tensor
    return out


def truly_missing(model, missing: list[str]) -> list[str]:
    """The keys of `missing` that `unique_tensors` did not just drop as a second name of a saved tensor."""
    params = dict(model.named_parameters(remove_duplicate=False))

    def is_alias(name: str) -> bool:
        return name in params and any(other != name and p.data_ptr() == params[name].data_ptr() for other, p in params.items())

    return [name for name in missing if not is_alias(name)]
