"""A model's tensors under llama.cpp's names (its own `gguf` tensor map), in the layout llama.cpp computes with.

Shared blocks are materialised (base weight plus their LoRA), Q and K rows are permuted where llama.cpp
rotates adjacent channel pairs, a Llama-3 rope scaling becomes llama.cpp's `rope_freqs` tensor, and
a deci layer without heads or channels but with a compensation bias gets one zeroed group or channel
that carries the bias (llama.cpp drops a sublayer of width 0 together with its bias). Gemma-3's norms
scale by 1 + weight where llama.cpp's scale by the weight, so 1 is added (as its converter does), and
the query norm also carries the ratio between transformers' attention scale and the one llama.cpp
derives from the layer count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import gguf
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.export.gguf_layout import GgufLayout
from prunekit.models.adapters import ModelAdapter
from prunekit.models.shared_blocks import SharedLoRALinear

ARCHITECTURES = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}


def effective_parameters(block: nn.Module, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) of a block with every shared linear replaced by its effective weight and bias."""
    shared = {name for name, module in block.named_modules() if isinstance(module, SharedLoRALinear)}
    for name, module in block.named_modules():
        if name in shared:
            module = block.get_submodule(name)
            yield f"{prefix}{name}.weight", module.weight
            if module.effective_bias() is not None:
                yield f"{prefix}{name}.bias", module.effective_bias()
            continue
        if any(name.startswith(s + ".") for s in shared):
            continue
        for leaf, tensor in module.named_parameters(recurse=False):
            yield f"{prefix}{name}.{leaf}" if name else f"{prefix}{leaf}", tensor


def permute_rope(weights: torch.Tensor, heads: int) -> torch.Tensor:
    """HF rotates channel halves of each head; llama.cpp's llama and deci rotate adjacent pairs (as its converter does)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _phantom_attention(prefix: str, groups: int, head_dim: int, hidden: int, o_bias: torch.Tensor):
    yield f"{prefix}self_attn.q_proj.weight", torch.zeros(groups * head_dim, hidden)
    yield f"{prefix}self_attn.k_proj.weight", torch.zeros(head_dim, hidden)
    yield f"{prefix}self_attn.v_proj.weight", torch.zeros(head_dim, hidden)
    yield f"{prefix}self_attn.o_proj.weight", torch.zeros(hidden, groups * head_dim)
    yield f"{prefix}self_attn.o_proj.bias", o_bias


def _phantom_ffn(prefix: str, hidden: int, down_bias: torch.Tensor | None):
    yield f"{prefix}mlp.gate_proj.weight", torch.zeros(1, hidden)
    yield f"{prefix}mlp.up_proj.weight", torch.zeros(1, hidden)
    yield f"{prefix}mlp.down_proj.weight", torch.zeros(hidden, 1)
    if down_bias is not None:
        yield f"{prefix}mlp.down_proj.bias", down_bias


def _block_tensors(block: nn.Module, index: int, layout: GgufLayout, config) -> Iterator[tuple[str, torch.Tensor]]:
    prefix = f"model.layers.{index}."
    shape = layout.layers[index]
    hidden = config.hidden_size
    groups = config.num_attention_heads // config.num_key_value_heads
    named = dict(effective_parameters(block, prefix))
    attention = [k for k in named if ".self_attn." in k]
    ffn = [k for k in named if ".mlp." in k]
    if shape.heads == 0 or shape.phantom_attention:  # no heads left: the sublayer goes, or becomes a bias carrier
        bias = named.get(f"{prefix}self_attn.o_proj.bias")
        norm = named.pop(f"{prefix}input_layernorm.weight")
        named = {k: v for k, v in named.items() if k not in attention}
        if shape.phantom_attention:
            named.update(_phantom_attention(prefix, groups, layout.head_dim, hidden, bias))
            named[f"{prefix}input_layernorm.weight"] = norm
    if shape.ffn == 0 or shape.phantom_ffn:
        bias = named.get(f"{prefix}mlp.down_proj.bias")
        norm = named.pop(f"{prefix}post_attention_layernorm.weight")
        named = {k: v for k, v in named.items() if k not in ffn}
        if shape.phantom_ffn:
            named.update(_phantom_ffn(prefix, hidden, bias))
            named[f"{prefix}post_attention_layernorm.weight"] = norm
    query_ratio = gemma3_query_ratio(config, layout) if layout.architecture == "gemma3" else 1.0
    for name, tensor in named.items():
        tensor = tensor.detach().float().cpu()
        if layout.architecture == "gemma3" and name.endswith("norm.weight"):
            tensor = (tensor + 1.0) * (query_ratio if name.endswith("q_norm.weight") else 1.0)
        if name.endswith(".bias") and not tensor.any():
            continue  # a zero bias is no bias, and not every llama.cpp graph loads every bias
        if layout.permutes_rope and (".q_proj." in name or ".k_proj." in name):
            tensor = permute_rope(tensor, shape.heads if ".q_proj." in name else shape.kv_heads)
        yield name, tensor


def gemma3_query_scale(config, layers: int, heads: int, head_dim: int) -> float:
    """The factor llama.cpp's gemma3 multiplies queries by: it knows the 27B model by its 62 layers."""
    return (config.hidden_size / heads if layers == 62 else head_dim) ** -0.5


def gemma3_query_ratio(config, layout: GgufLayout) -> float:
    """transformers' attention scale over llama.cpp's, folded into the query norm (rope is linear, so the
    product is the same): 1 for every published Gemma-3 at its own depth."""
    wanted = (getattr(config, "query_pre_attn_scalar", None) or layout.head_dim) ** -0.5
    return wanted / gemma3_query_scale(config, len(layout.layers), layout.layers[0].heads, layout.head_dim)


def rope_parameters(config) -> dict:
    """The rope settings of a config, under either name transformers has used for them."""
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(parameters)


def llama3_rope_factors(config, head_dim: int) -> torch.Tensor | None:
    """llama.cpp's `rope_freqs` for a Llama-3 rope scaling (the formula of its converter); None for plain rope."""
    rope = rope_parameters(config)
    if (rope.get("rope_type") or rope.get("type") or "default").lower() != "llama3":
        return None
    base = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def gguf_tensors(model, layout: GgufLayout) -> Iterator[tuple[str, torch.Tensor]]:
    """(llama.cpp name, float32 tensor) of every tensor the file holds, in file order."""
    adapter = ModelAdapter(model)
    config = model.config
    names = gguf.get_tensor_name_map(ARCHITECTURES[layout.architecture], adapter.num_blocks)

    def renamed(hf_name: str) -> str:
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise PrunekitError(f"llama.cpp's {layout.architecture} has no tensor for {hf_name}; this model cannot be exported to GGUF")
        return name

    yield renamed("model.embed_tokens.weight"), adapter.base.embed_tokens.weight.detach().float().cpu()
    factors = llama3_rope_factors(config, layout.head_dim)
    if factors is not None:
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors
    for index, block in enumerate(adapter.layers):
        for name, tensor in _block_tensors(block, index, layout, config):
            yield renamed(name), tensor
    norm = adapter.base.norm.weight.detach().float().cpu()
    yield renamed("model.norm.weight"), norm + 1.0 if layout.architecture == "gemma3" else norm
    head = model.get_output_embeddings()
    if not getattr(config, "tie_word_embeddings", False) or head.weight is not adapter.base.embed_tokens.weight:
        yield renamed("lm_head.weight"), head.weight.detach().float().cpu()
