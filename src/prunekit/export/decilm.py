"""Per-layer widths in the DeciLM ("nemotron-nas") format: the one form in which vLLM (and, with limits,
SGLang and TensorRT-LLM) serve a Llama whose layers differ.

The reader's rules (vLLM's `nemotron_nas.py`) decide the layout:
- every layer has `num_attention_heads` query heads and `num_attention_heads // n_heads_in_group` KV
  heads; a layer LIAR left with fewer heads is written exactly by zero padding: each kept KV group gets
  zero query rows (and zero output columns) up to the group size the format needs, and where the head
  count has no group size that divides it, whole zero groups are added. Zero output columns make the
  padded heads contribute nothing, so the model computes what it computed; the cost is attention
  compute of the full head count (the KV cache keeps the smaller count);
- an FFN's `intermediate_size` is written as it is (no `ffn_mult`, whose rounding to 256 would change
  the width); a removed attention or FFN is `no_op` and has no weights or norm;
- `attention_bias` with `qkv_bias: false` puts a bias on o_proj alone, `mlp_bias` on gate, up and down:
  a declared bias must be in the checkpoint, so the zero ones are written too, and a sublayer left
  with no width but a compensation bias keeps one zero group or channel that carries it.
No transformers or vLLM class reads `nemotron-nas` configs, so the checkpoint carries its own
(`configuration_decilm.py`, loaded with trust_remote_code).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from prunekit.errors import PrunekitError
from prunekit.export.gguf_layout import DECI_FAMILIES, has_bias
from prunekit.export.gguf_tensors import effective_parameters
from prunekit.models.adapters import ModelAdapter
from prunekit.models.export import output_dir, with_loaded_from, write_checkpoint
from prunekit.models.tied_tensors import unique_tensors

CONFIG_MODULE = "configuration_decilm.py"
CONFIG_SOURCE = '''"""The DeciLM ("nemotron-nas") configuration, written by prunekit beside the weights: vLLM reads each
block's attention and FFN settings as attributes (block.attention.no_op), so the dicts become objects."""

from types import SimpleNamespace

from transformers import PretrainedConfig


def _as_object(value):
    return SimpleNamespace(**{k: _as_object(v) for k, v in value.items()}) if isinstance(value, dict) else value


class DeciLMConfig(PretrainedConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=(), **kwargs):
        self.block_configs = [_as_object(block) for block in block_configs]
        super().__init__(**kwargs)

    def to_dict(self):
        out = super().to_dict()
        out["block_configs"] = [_as_dict(block) for block in self.block_configs]
        return out


def _as_dict(value):
    return {k: _as_dict(v) for k, v in vars(value).items()} if isinstance(value, SimpleNamespace) else value
'''


@dataclass
class DeciLayer:
    """One layer as written: KV groups and the query heads per group the format sees, and the FFN width."""

    groups: int  # KV heads written (0: attention no_op)
    group_size: int  # query heads per KV group written (n_heads_in_group)
    kept_groups: int  # KV groups the model really has (the rest are zero)
    query_heads: int  # query heads the model really has (the rest of groups x group_size are zero)
    ffn: int  # FFN channels written (0: FFN no_op)

    @property
    def padded_heads(self) -> int:
        return self.groups * self.group_size - self.query_heads


@dataclass
class DeciExport:
    path: Path
    layers: list[DeciLayer]
    decilm: bool  # False: the model has uniform widths and was written as the plain checkpoint it is
    notes: list[str]

    @property
    def padded_heads(self) -> int:
        """Zero query heads added over all layers."""
        return sum(layer.padded_heads for layer in self.layers)


def _written_groups(kept: int, heads: int) -> int:
    """The fewest KV groups >= `kept` whose group size divides the query head count (the format's rule)."""
    return next(g for g in range(max(kept, 1), heads + 1) if heads % g == 0)


def decilm_layout(model) -> list[DeciLayer]:
    adapter = ModelAdapter(model)
    family = adapter.family
    if family.name not in DECI_FAMILIES:
        raise PrunekitError(
            f"the DeciLM format is a Llama with per-layer widths; {family.name} has no form in it (its norms or projections differ)"
        )
    heads = model.config.num_attention_heads  # the widest layer's, as prunekit records them
    head_dim = getattr(adapter.layers[0], family.attention_attr).head_dim
    layers = []
    for layer in adapter.layers:
        attention, mlp = getattr(layer, family.attention_attr), getattr(layer, family.mlp_attr)
        query_heads = attention.o_proj.in_features // head_dim
        kept = attention.k_proj.out_features // head_dim
        if kept == 0:
            groups = 1 if has_bias(attention.o_proj) else 0  # a bias alone rides on one zero group
        else:
            groups = _written_groups(kept, heads)
            if query_heads % kept or query_heads // kept > heads // groups:
                raise PrunekitError(f"a layer's {query_heads} query heads do not fit {groups} groups of {heads // groups}")
        width = mlp.down_proj.in_features
        ffn = width if width else (1 if has_bias(mlp.down_proj) else 0)
        layers.append(DeciLayer(groups, heads // groups if groups else 0, kept, query_heads, ffn))
    return layers


def _attention_tensors(written: DeciLayer, heads: int, head_dim: int, hidden: int, prefix: str, bias: bool, named):
    """q/k/v/o of one layer padded to `written.groups` groups of `written.group_size` query heads each."""
    kept, size = written.kept_groups, written.group_size
    q = torch.zeros(written.groups, size, head_dim, hidden)
    k = torch.zeros(written.groups, head_dim, hidden)
    v = torch.zeros(written.groups, head_dim, hidden)
    o = torch.zeros(hidden, written.groups, size, head_dim)
    if kept:
        real = written.query_heads // kept  # query heads per kept group
        q[:kept, :real] = named[f"{prefix}self_attn.q_proj.weight"].reshape(kept, real, head_dim, hidden)
        k[:kept] = named[f"{prefix}self_attn.k_proj.weight"].reshape(kept, head_dim, hidden)
        v[:kept] = named[f"{prefix}self_attn.v_proj.weight"].reshape(kept, head_dim, hidden)
        o[:, :kept, :real] = named[f"{prefix}self_attn.o_proj.weight"].reshape(hidden, kept, real, head_dim)
    out = {
        f"{prefix}self_attn.q_proj.weight": q.reshape(heads * head_dim, hidden),
        f"{prefix}self_attn.k_proj.weight": k.reshape(-1, hidden),
        f"{prefix}self_attn.v_proj.weight": v.reshape(-1, hidden),
        f"{prefix}self_attn.o_proj.weight": o.reshape(hidden, heads * head_dim),
    }
    if bias:
        o_bias = named.get(f"{prefix}self_attn.o_proj.bias")
        out[f"{prefix}self_attn.o_proj.bias"] = o_bias if o_bias is not None else torch.zeros(hidden)
    return out


def _ffn_tensors(written: DeciLayer, hidden: int, prefix: str, bias: bool, named):
    width = named[f"{prefix}mlp.down_proj.weight"].shape[1]
    out = {}
    for name, shape in (("gate_proj", (written.ffn, hidden)), ("up_proj", (written.ffn, hidden)), ("down_proj", (hidden, written.ffn))):
        weight = named[f"{prefix}mlp.{name}.weight"] if width else torch.zeros(shape)
        out[f"{prefix}mlp.{name}.weight"] = weight
        if bias:
            found = named.get(f"{prefix}mlp.{name}.bias")
            out[f"{prefix}mlp.{name}.bias"] = found if found is not None and found.numel() else torch.zeros(shape[0])
    return out


def decilm_tensors(model, layers: list[DeciLayer]) -> tuple[dict[str, torch.Tensor], bool, bool]:
    """The checkpoint's tensors under Llama's names, and whether attention and MLP biases are declared."""
    adapter = ModelAdapter(model)
    config = model.config
    heads, hidden = config.num_attention_heads, config.hidden_size
    head_dim = getattr(adapter.layers[0], adapter.family.attention_attr).head_dim
    blocks = [dict(effective_parameters(layer, f"model.layers.{i}.")) for i, layer in enumerate(adapter.layers)]
    attention_bias = any(has_bias(getattr(layer, adapter.family.attention_attr).o_proj) for layer in adapter.layers)
    qkv_bias = any(
        name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")) and bool(tensor.detach().abs().max() > 0)
        for block in blocks
        for name, tensor in block.items()
        if tensor.numel()
    )
    if qkv_bias:
        raise PrunekitError("q/k/v biases (Qwen2) in the DeciLM format: not written yet; export this model to GGUF instead")
    mlp_bias = any(has_bias(getattr(layer, adapter.family.mlp_attr).down_proj) for layer in adapter.layers)
    tensors = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("model.layers.")}
    for index, (written, named) in enumerate(zip(layers, blocks)):
        prefix = f"model.layers.{index}."
        if written.groups:
            tensors[f"{prefix}input_layernorm.weight"] = named[f"{prefix}input_layernorm.weight"]
            tensors.update(_attention_tensors(written, heads, head_dim, hidden, prefix, attention_bias, named))
        if written.ffn:
            tensors[f"{prefix}post_attention_layernorm.weight"] = named[f"{prefix}post_attention_layernorm.weight"]
            tensors.update(_ffn_tensors(written, hidden, prefix, mlp_bias, named))
    return tensors, attention_bias, mlp_bias


def decilm_config(model, layers: list[DeciLayer], attention_bias: bool, mlp_bias: bool) -> dict:
    config = model.config.to_dict()
    for key in ("prunekit_layer_widths", "num_key_value_heads", "intermediate_size", "model_type", "architectures", "auto_map"):
        config.pop(key, None)
    blocks = [
        {
            "attention": {"no_op": not layer.groups, "replace_with_linear": False, "n_heads_in_group": layer.group_size or None},
            "ffn": {"no_op": not layer.ffn, "replace_with_linear": False, "intermediate_size": layer.ffn or None},
        }
        for layer in layers
    ]
    return {
        **config,
        "architectures": ["DeciLMForCausalLM"],
        "model_type": "nemotron-nas",
        "auto_map": {"AutoConfig": "configuration_decilm.DeciLMConfig"},
        "num_hidden_layers": len(layers),
        "attention_bias": attention_bias,
        "qkv_bias": False,
        "mlp_bias": mlp_bias,
        "block_configs": blocks,
    }


def export_decilm(model, tokenizer, out: str | os.PathLike, *, overwrite: bool = False, protected: list = ()) -> DeciExport:
    """Write `model` as a DeciLM checkpoint in `out` (atomically): config.json with one block config per layer,
    its configuration module, model.safetensors and the tokenizer."""
    layers = decilm_layout(model)
    inputs = with_loaded_from(model, protected)
    path = Path(out).expanduser().resolve()
    if len({(layer.groups, layer.ffn) for layer in layers}) == 1 and all(one.groups == one.kept_groups and one.ffn for one in layers):
        with output_dir(out, overwrite=overwrite, protected=inputs) as tmp:  # uniform: vLLM reads it as the Llama it is
            write_checkpoint(model, tokenizer, tmp)
        note = "every layer has the same widths: written as a plain checkpoint, which vLLM serves as it is"
        return DeciExport(path, layers, False, [note])
    tensors, attention_bias, mlp_bias = decilm_tensors(model, layers)
    notes = []
    padded = sum(layer.padded_heads for layer in layers)
    if padded:
        notes.append(
            f"{padded} zero query heads pad the layers LIAR narrowed (vLLM's format has one query-head count); they add "
            "nothing to the output but attention computes them, while the KV cache keeps each layer's smaller count"
        )
    window = getattr(model.config, "sliding_window", None)
    if window and getattr(model.config, "use_sliding_window", True):
        notes.append(f"vLLM's DeciLM attends over the whole context: outputs match transformers' up to {window} tokens")
    with output_dir(out, overwrite=overwrite, protected=inputs) as tmp:
        contiguous = {name: tensor.detach().to("cpu").contiguous() for name, tensor in unique_tensors(tensors).items()}
        save_file(contiguous, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(decilm_config(model, layers, attention_bias, mlp_bias), indent=2) + "\n")
        (tmp / CONFIG_MODULE).write_text(CONFIG_SOURCE)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return DeciExport(path, layers, True, notes)
