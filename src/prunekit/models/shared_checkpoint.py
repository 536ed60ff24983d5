"""Save, load and merge models holding weight-shared blocks (FlexiGPT replacements and extensions).

On disk: `config.json` (the full depth), `shared_base.safetensors` (every plain weight, each shared
tensor once), `shared_adapters.safetensors` (the shared blocks' own LoRA pairs, bias deltas, norms
and output-norm scales) and `prunekit_shared_blocks.json` (which block borrows from which).
There is deliberately no `model.safetensors`: plain `from_pretrained` would build the shared blocks
as random independent blocks, so it fails loudly instead; `prunekit.load_model(path)` rebuilds the
model, and `merge_shared_blocks` + `save_model` writes a plain checkpoint where that is exact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.jsonfiles import read_json_object
from prunekit.models.adapters import ModelAdapter, family_for_config, parameter_count
from prunekit.models.export import output_dir, strip_gguf_quantizer
from prunekit.models.shared_blocks import OutputNorm, SharedLoRALinear, build_shared_block, is_shared_block, shared_structure
from prunekit.models.tied_tensors import truly_missing, unique_tensors

STRUCTURE_FILE = "prunekit_shared_blocks.json"
BASE_FILE = "shared_base.safetensors"
ADAPTERS_FILE = "shared_adapters.safetensors"
FORMAT = 1


def has_shared_blocks(model) -> bool:
    return any(is_shared_block(layer) for layer in ModelAdapter(model).layers)


def is_shared_checkpoint(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STRUCTURE_FILE).is_file()


def _split_state(model, structure: list[dict]) -> tuple[dict, dict]:
    adapter = ModelAdapter(model)
    layers_prefix = next(name for name, module in model.named_modules() if module is adapter.layers)
    shared_prefixes = tuple(f"{layers_prefix}.{entry['position']}." for entry in structure)
    state = unique_tensors({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()})
    base = {k: v for k, v in state.items() if not k.startswith(shared_prefixes)}
    adapters = {k: v for k, v in state.items() if k.startswith(shared_prefixes)}
    return base, adapters


def save_shared_model(
    model, tokenizer, out: str | os.PathLike, *, overwrite: bool = False, extra_json: dict | None = None, protected: list = ()
) -> Path:
    """Write the model with shared tensors stored once, atomically; returns the directory."""
    out_path = Path(out).expanduser().resolve()
    structure = shared_structure(model)
    base, adapters = _split_state(model, structure)
    strip_gguf_quantizer(model)
    with output_dir(out_path, overwrite=overwrite, protected=protected) as tmp:
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_file(base, str(tmp / BASE_FILE), metadata={"format": "pt"})
        save_file(adapters, str(tmp / ADAPTERS_FILE), metadata={"format": "pt"})
        payload = {
            "format": FORMAT,
            "blocks": structure,
            "parameters": parameter_count(model),
            "bytes_on_disk_weights": (tmp / BASE_FILE).stat().st_size + (tmp / ADAPTERS_FILE).stat().st_size,
        }
        (tmp / STRUCTURE_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        for name, content in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
    return out_path


def load_shared_model(directory: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
    """Rebuild a model saved by `save_shared_model`: plain blocks, then shared blocks, then the weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    payload = read_json_object(directory / STRUCTURE_FILE, "shared-block structure")
    if payload.get("format") != FORMAT or not isinstance(payload.get("blocks"), list):
        raise PrunekitError(f"{directory / STRUCTURE_FILE} is not a prunekit shared-block structure (format {FORMAT})")
    config = AutoConfig.from_pretrained(directory)
    family = family_for_config(config)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    adapter = ModelAdapter(model)
    layers = list(adapter.layers)
    for entry in payload["blocks"]:
        position, owner = entry["position"], entry["shares_with"]
        if not (0 <= position < len(layers) and 0 <= owner < len(layers)):
            raise PrunekitError(
                f"{directory / STRUCTURE_FILE}: block {position} borrows from {owner}, outside the model's {len(layers)} blocks"
            )
        layers[position] = build_shared_block(
            layers[position], layers[owner], family, rank=entry["rank"], output_norm=entry["output_norm"], layer_idx=position
        )
    adapter.layers = nn.ModuleList(layers)
    state = {**load_file(str(directory / BASE_FILE)), **load_file(str(directory / ADAPTERS_FILE))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = truly_missing(model, missing)
    if unexpected or missing:
        raise PrunekitError(f"{directory} does not match its structure (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()


@torch.no_grad()
def merge_shared_blocks(model) -> None:
    """Turn every shared block into a plain block (own weights = base + B A) in place.

    Output normalisation (a per-channel scale times x / rms(x) on a sublayer's output) has no
    counterpart in a standard decoder block, so a model that uses it cannot be merged exactly and is
    refused rather than approximated.
    """
    adapter = ModelAdapter(model)
    if any(isinstance(m, OutputNorm) for layer in adapter.layers for m in layer.modules()):
        raise PrunekitError(
            f"cannot merge: the output normalisation of the shared blocks has no equivalent in a plain "
            f"{model.config.model_type} block; keep the shared checkpoint (load it with prunekit.load_model) "
            "or build it with `output_norm` none"
        )
    for layer in adapter.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, SharedLoRALinear):
                    bias = child.effective_bias()
                    linear = nn.Linear(
                        child.in_features,
                        child.out_features,
                        bias=bias is not None,
                        dtype=child.base.weight.dtype,
                        device=child.base.weight.device,
                    )
                    linear.weight.copy_(child.weight)
                    if bias is not None:
                        linear.bias.copy_(bias)
                    setattr(parent, name, linear)
