"""Per-layer widths (FFN channels, attention heads) that a standard config cannot express.

A transformers config holds one `intermediate_size` and one head count for every layer, so a model
pruned with adaptive widths cannot be rebuilt by plain `AutoModelForCausalLM.from_pretrained`. We
save the standard fields as the widest layer (so the file is still a valid config) plus a
`prunekit_layer_widths` entry with one value per layer; `load_layer_width_model` builds every
decoder block from its own copy of the config and then loads the safetensors weights. Plain
transformers refuses such a checkpoint with a size-mismatch error instead of loading it wrongly.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter, family_for_config
from prunekit.models.tied_tensors import truly_missing

WIDTHS_KEY = "prunekit_layer_widths"
WIDTH_FIELDS = ("intermediate_size", "num_attention_heads", "num_key_value_heads")


def _measured_widths(model) -> tuple[dict[str, list[int]], int]:
    """(per-layer widths, head dim) read from the modules themselves (true after any surgery)."""
    adapter = ModelAdapter(model)
    family = adapter.family
    consumer = family.mlp_projections[-1]
    out: dict[str, list[int]] = {name: [] for name in WIDTH_FIELDS}
    head_dim = getattr(adapter.layers[0], family.attention_attr).head_dim
    for layer in adapter.layers:
        attention = getattr(layer, family.attention_attr)
        out["intermediate_size"].append(getattr(getattr(layer, family.mlp_attr), consumer).in_features)
        heads = attention.o_proj.in_features // head_dim
        out["num_attention_heads"].append(heads)
        groups = getattr(attention, "num_key_value_groups", None) or model.config.num_attention_heads // model.config.num_key_value_heads
        out["num_key_value_heads"].append(heads // groups)
    return out, head_dim


def record_layer_widths(model) -> bool:
    """Write the model's real widths into its config; returns True when they differ across layers.

    Uniform widths become the standard fields; non-uniform ones keep the widest layer in the standard
    fields and the per-layer lists under `prunekit_layer_widths`.
    """
    config = model.config
    widths, config.head_dim = _measured_widths(model)
    uniform = all(len(set(values)) == 1 for values in widths.values())
    for name, values in widths.items():
        setattr(config, name, max(values))
    if uniform:
        if hasattr(config, WIDTHS_KEY):
            delattr(config, WIDTHS_KEY)
        return False
    setattr(config, WIDTHS_KEY, widths)
    return True


def has_layer_widths(config) -> bool:
    return isinstance(getattr(config, WIDTHS_KEY, None), dict)


def layer_config(config, index: int):
    """A copy of `config` with layer `index`'s widths in the standard fields."""
    widths = getattr(config, WIDTHS_KEY)
    out = copy.copy(config)
    for name in WIDTH_FIELDS:
        values = widths.get(name)
        if values is not None:
            setattr(out, name, int(values[index]))
    return out


def check_layer_widths(config, fields: tuple[str, ...] = WIDTH_FIELDS, required: bool = False) -> None:
    """Every listed per-layer field (present ones only, unless `required`) holds one positive int per layer."""
    widths = getattr(config, WIDTHS_KEY)
    layers = config.num_hidden_layers
    for name in fields:
        values = widths.get(name)
        if (values is not None or required) and (
            not isinstance(values, list) or len(values) != layers or not all(isinstance(v, int) and v > 0 for v in values)
        ):
            raise PrunekitError(
                f"config {WIDTHS_KEY}.{name} must list {layers} positive integers (one per layer); the checkpoint is damaged"
            )


def build_layer_width_model(config, dtype: torch.dtype = torch.float32):
    """An (untrained) model whose every decoder block has its own widths."""
    from transformers import AutoModelForCausalLM

    family_for_config(config)
    check_layer_widths(config)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    adapter = ModelAdapter(model)
    layers = []
    for index, layer in enumerate(adapter.layers):
        layers.append(type(layer)(layer_config(config, index), layer_idx=index).to(dtype))
    adapter.layers = nn.ModuleList(layers)
    return model


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / name for name in names]
    return sorted(directory.glob("*.safetensors"))


def load_layer_width_model(directory: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """Rebuild a checkpoint saved with per-layer widths (prunekit prune --method liar --allocation adaptive)."""
    from transformers import AutoConfig

    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory)
    if not has_layer_widths(config):
        raise PrunekitError(f"{directory} has no {WIDTHS_KEY} in its config; load it with AutoModelForCausalLM.from_pretrained")
    model = build_layer_width_model(config, dtype)
    load_weights(model, directory)
    return model.to(device).eval()


def load_weights(model, directory: Path, optional_prefixes: tuple[str, ...] = ()) -> None:
    """Load every safetensors file of `directory` into a rebuilt model; refuse any mismatch
    (keys starting with `optional_prefixes` may be missing)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in _safetensors_files(directory):
        state.update(load_file(str(path)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in truly_missing(model, missing) if not name.startswith(optional_prefixes)]
    if unexpected or missing:
        raise PrunekitError(f"{directory} does not match its per-layer widths (missing {missing[:3]}, unexpected {unexpected[:3]})")
