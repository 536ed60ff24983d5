"""What pruning methods need from a decoder model, answered once per family.

Methods never reach into raw attribute paths; they ask the adapter for the block list, the final
norm, the LM head and the per-layer config fields. Families differ in data (a table keyed by the
HF `model_type`), not in scattered name checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from prunekit.errors import PrunekitError


@dataclass(frozen=True)
class DecoderFamily:
    """Where a decoder family keeps its parts; defaults follow the Llama layout."""

    name: str
    base_attr: str = "model"
    layers_attr: str = "layers"
    embed_attr: str = "embed_tokens"
    norm_attr: str = "norm"
    head_attr: str = "lm_head"
    attention_attr: str = "self_attn"
    mlp_attr: str = "mlp"
    # Config fields holding one entry per decoder block; block removal slices them.
    per_layer_config_fields: tuple[str, ...] = ("layer_types",)
    # Config field holding a tanh soft-cap applied to the final logits (Gemma 2/3).
    logit_softcap_field: str | None = None
    attention_projections: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    mlp_projections: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
    # A block ends in `residual + post(mlp(norm(residual)))`: `mlp_norm_attr` is the norm whose input
    # is that residual, `mlp_post_norm_attr` the norm on the MLP's output (None: added as it is).
    # Width pruning uses it to recompute a block's output after pruning its FFN without rerunning it.
    mlp_norm_attr: str = "post_attention_layernorm"
    mlp_post_norm_attr: str | None = None
    # Config switches that give every MLP / attention projection a bias, where the family has one
    # (width pruning stores a compensation bias only where the switch makes it exact).
    mlp_bias_field: str | None = None
    attention_bias_field: str | None = None


_LLAMA = DecoderFamily("llama", mlp_bias_field="mlp_bias", attention_bias_field="attention_bias")
FAMILIES: dict[str, DecoderFamily] = {
    "llama": _LLAMA,
    "mistral": DecoderFamily("mistral"),
    "qwen2": DecoderFamily("qwen2"),
    "qwen3": DecoderFamily("qwen3", attention_bias_field="attention_bias"),
    "gemma": DecoderFamily("gemma", attention_bias_field="attention_bias"),
    "gemma2": DecoderFamily(
        "gemma2",
        logit_softcap_field="final_logit_softcapping",
        attention_bias_field="attention_bias",
        mlp_norm_attr="pre_feedforward_layernorm",
        mlp_post_norm_attr="post_feedforward_layernorm",
    ),
    "gemma3_text": DecoderFamily(
        "gemma3_text",
        logit_softcap_field="final_logit_softcapping",
        attention_bias_field="attention_bias",
        mlp_norm_attr="pre_feedforward_layernorm",
        mlp_post_norm_attr="post_feedforward_layernorm",
    ),
    "phi3": DecoderFamily(
        "phi3",
        attention_projections=("qkv_proj", "o_proj"),
        mlp_projections=("gate_up_proj", "down_proj"),
    ),
}


def supported_model_types() -> list[str]:
    return sorted(FAMILIES)


def family_for_config(config) -> DecoderFamily:
    """The family of a config, or a one-line error naming what is supported."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        raise PrunekitError(
            f"unsupported architecture '{model_type}' ({', '.join(getattr(config, 'architectures', None) or [])}); "
            f"prunekit supports decoder models of type: {', '.join(supported_model_types())}"
        )
    return family


class ModelAdapter:
    """A causal LM seen through its family: blocks, embeddings, final norm, head."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.family = family_for_config(model.config)

    @property
    def config(self):
        return self.model.config

    @property
    def base(self) -> nn.Module:
        return getattr(self.model, self.family.base_attr)

    @property
    def layers(self) -> nn.ModuleList:
        return getattr(self.base, self.family.layers_attr)

    @layers.setter
    def layers(self, value: nn.ModuleList) -> None:
        setattr(self.base, self.family.layers_attr, value)

    @property
    def num_blocks(self) -> int:
        return len(self.layers)

    @property
    def final_norm(self) -> nn.Module:
        return getattr(self.base, self.family.norm_attr)

    @property
    def lm_head(self) -> nn.Module:
        return getattr(self.model, self.family.head_attr)

    def logits(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """LM logits from the hidden state after the final norm, as the model's own head computes them."""
        logits = self.lm_head(last_hidden_state)
        cap = getattr(self.config, self.family.logit_softcap_field, None) if self.family.logit_softcap_field else None
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def non_block_modules(self) -> list[nn.Module]:
        """Everything outside the decoder blocks (embeddings, rotary, norm, head)."""
        layers = self.layers
        out = [m for name, m in self.base.named_children() if m is not layers]
        out += [m for name, m in self.model.named_children() if m is not self.base]
        return out

    def block_parameter_count(self, index: int) -> int:
        return sum(p.numel() for p in self.layers[index].parameters())

    # -- the width interface shared with EncoderAdapter (see BlockAdapter) --
    def attention(self, index: int) -> nn.Module:
        return getattr(self.layers[index], self.family.attention_attr)

    def mlp(self, index: int) -> nn.Module:
        return getattr(self.layers[index], self.family.mlp_attr)

    def attention_inputs(self, index: int) -> list[nn.Module]:
        """The projections that read the attention's input (q, k, v; Phi-3's one fused qkv)."""
        return [getattr(self.attention(index), name) for name in self.family.attention_projections[:-1]]

    def attention_output(self, index: int) -> nn.Module:
        """The projection that consumes the heads (o_proj)."""
        return getattr(self.attention(index), self.family.attention_projections[-1])

    def mlp_inputs(self, index: int) -> list[nn.Module]:
        """The projections that make the FFN channels (gate and up; Phi-3's fused gate_up)."""
        return [getattr(self.mlp(index), name) for name in self.family.mlp_projections[:-1]]

    def mlp_output(self, index: int) -> nn.Module:
        """The projection that consumes the FFN channels (down_proj)."""
        return getattr(self.mlp(index), self.family.mlp_projections[-1])

    def head_size(self, index: int = 0) -> int:
        return self.attention(index).head_dim

    def num_heads(self, index: int) -> int:
        return self.attention_output(index).in_features // self.head_size(index)


class BlockAdapter(Protocol):
    """What every method may ask of a model, decoder or encoder: blocks, the modules around them, and
    per block the projections that feed and consume its heads and FFN channels."""

    config: object
    layers: nn.ModuleList
    num_blocks: int

    def non_block_modules(self) -> list[nn.Module]: ...
    def block_parameter_count(self, index: int) -> int: ...
    def attention_inputs(self, index: int) -> list[nn.Module]: ...
    def attention_output(self, index: int) -> nn.Module: ...
    def mlp_inputs(self, index: int) -> list[nn.Module]: ...
    def mlp_output(self, index: int) -> nn.Module: ...
    def head_size(self, index: int = 0) -> int: ...
    def num_heads(self, index: int) -> int: ...


def parameter_count(model: nn.Module) -> int:
    """Parameters counted once even when tied (embeddings and LM head)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
