"""Which llama.cpp architecture a model is written as, and each layer's shape there.

Uniform models keep their native architecture (`llama`, `qwen2`, `qwen3`, `gemma3`, `phi3`). Per-layer
widths or head counts are written as `deci` (llama.cpp's form for Nemotron-51B), which reads the FFN width
and both head counts as per-layer arrays and loads the optional attention-output and FFN-down biases that
LIAR's compensation adds; it runs plain Llama blocks only, so Gemma-3 and Phi-3 export with uniform widths
(llama.cpp sizes their layers from one width). A structure llama.cpp cannot run is refused here, in one
line, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter
from prunekit.models.shared_blocks import NormalizedOutput, is_shared_block

# prunekit family -> llama.cpp architecture of a uniform model
NATIVE_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3", "phi3": "phi3"}
# readable names for messages
FAMILY_NAMES = {"qwen3": "Qwen3", "gemma3_text": "Gemma-3", "phi3": "Phi-3"}
# llama.cpp rotates pairs of adjacent channels in these (HF rotates halves): their Q and K rows are permuted.
INTERLEAVED_ROPE = ("llama", "deci")
# families whose blocks are plain Llama blocks (q/k/v/o with optional biases, SwiGLU, RMSNorm): `deci` runs them
DECI_FAMILIES = ("llama", "mistral", "qwen2")


@dataclass
class LayerShape:
    """A layer as written: a phantom sublayer counts its one zeroed head group or channel."""

    heads: int
    kv_heads: int
    ffn: int
    phantom_attention: bool = False  # no heads left but an output bias: written as one zeroed head group plus the bias
    phantom_ffn: bool = False  # no channels left: written as one zeroed channel (llama.cpp's deci skips the block otherwise)


@dataclass
class GgufLayout:
    architecture: str
    family: str
    head_dim: int
    layers: list[LayerShape]
    notes: list[str] = field(default_factory=list)

    @property
    def per_layer(self) -> bool:
        return self.architecture == "deci"

    @property
    def permutes_rope(self) -> bool:
        return self.architecture in INTERLEAVED_ROPE


def has_bias(linear) -> bool:
    bias = linear.effective_bias() if hasattr(linear, "effective_bias") else linear.bias
    return bias is not None and bool(bias.detach().abs().max() > 0)


def check_exportable_family(family_name: str) -> str:
    """The llama.cpp architecture of a uniform model of this family, or a one-line refusal."""
    native = NATIVE_ARCHITECTURES.get(family_name)
    if native is None:
        raise PrunekitError(
            f"GGUF export supports Llama, Mistral, Qwen2/Qwen3, Gemma-3 and Phi-3 models; {family_name} is not supported yet "
            "(save it with transformers and convert a uniform-width copy with llama.cpp's convert_hf_to_gguf.py)"
        )
    return native


def gguf_layout(model) -> GgufLayout:
    """The llama.cpp form of `model`, or a one-line PrunekitError saying why it has none."""
    adapter = ModelAdapter(model)
    family = adapter.family
    native = check_exportable_family(family.name)
    config = model.config
    notes = []
    shared = [i for i, layer in enumerate(adapter.layers) if is_shared_block(layer)]
    if shared:
        if any(isinstance(m, NormalizedOutput) for i in shared for m in adapter.layers[i].modules()):
            raise PrunekitError(
                "this model's shared blocks normalise their attention and MLP outputs, which llama.cpp's graphs cannot "
                "express; prune with FlexiGPT's output_norm=None (or another method) to export to GGUF"
            )
        notes.append(
            f"blocks {', '.join(map(str, shared))} share weights in prunekit; llama.cpp has no shared-weight form, so they are "
            "written as separate weights and the file is as large as a model of this depth"
        )
    attention, mlp = family.attention_attr, family.mlp_attr
    head_dim = getattr(adapter.layers[0], attention).head_dim
    groups = config.num_attention_heads // config.num_key_value_heads
    layers = []
    for layer in adapter.layers:
        heads = getattr(layer, attention).o_proj.in_features // head_dim
        ffn = getattr(getattr(layer, mlp), family.mlp_projections[-1]).in_features
        layers.append(LayerShape(heads=heads, kv_heads=heads // groups, ffn=ffn))
    uniform = len({(s.heads, s.kv_heads, s.ffn) for s in layers}) == 1 and layers[0].heads > 0 and layers[0].ffn > 0
    architecture = native
    if native in ("gemma3", "phi3"):  # their graphs add no bias to any projection
        extra_bias = any(has_bias(m) for layer in adapter.layers for m in layer.modules() if isinstance(m, nn.Linear))
    else:  # the attention-output and FFN-down biases LIAR's compensation adds
        extra_bias = any(has_bias(getattr(layer, attention).o_proj) or has_bias(getattr(layer, mlp).down_proj) for layer in adapter.layers)
    if uniform and native == "qwen2" and (layers[0].heads * head_dim != config.hidden_size or extra_bias):
        uniform = False  # llama.cpp's qwen2 sizes attention by the hidden width and has no output biases; deci has both
    if native in ("gemma3", "phi3") and extra_bias:
        raise PrunekitError(
            f"llama.cpp's {native} adds no bias to its projections, and this model has some (width compensation adds them); "
            f"prune {FAMILY_NAMES[family.name]} with reconstruction='none' (or FFN channels only) to export to GGUF"
        )
    if native == "qwen3" and extra_bias:
        raise PrunekitError(
            f"llama.cpp's {native} has no attention-output or FFN-down bias, which this model's width compensation added; "
            "prune Qwen3 with reconstruction='none' to export to GGUF"
        )
    if native == "phi3" and any(s.heads * head_dim != config.hidden_size for s in layers):
        raise PrunekitError(
            "llama.cpp's phi3 sizes attention by the hidden width, so Phi-3 with pruned heads has no GGUF form; "
            "prune its FFN channels only (head_ratio=0) or its depth to export to GGUF"
        )
    if native == "gemma3":
        check_gemma3(config)
    if not uniform:
        if family.name not in DECI_FAMILIES:
            raise PrunekitError(
                f"{family.name} models with per-layer widths have no llama.cpp form (its per-layer architecture, deci, "
                "runs plain Llama blocks only); prune with uniform widths (allocation='uniform') to export to GGUF"
            )
        architecture = "deci"
        for layer, shape in zip(adapter.layers, layers):
            if shape.heads == 0 and has_bias(getattr(layer, attention).o_proj):
                shape.phantom_attention, shape.heads, shape.kv_heads = True, groups, 1
            if shape.ffn == 0 and (shape.heads > 0 or has_bias(getattr(layer, mlp).down_proj)):
                shape.phantom_ffn, shape.ffn = True, 1
    window = getattr(config, "sliding_window", None)
    if window and native != "gemma3" and getattr(config, "use_sliding_window", True) and window < config.max_position_embeddings:
        notes.append(f"llama.cpp's {architecture} attends over the whole context: outputs match transformers' up to {window} tokens")
    return GgufLayout(architecture, family.name, head_dim, layers, notes)


def check_gemma3(config) -> None:
    """What llama.cpp's gemma3 graph cannot compute, refused in one line: logit soft-capping (its sliding-window
    graph has none) and a rope scaling other than linear."""
    for setting in ("final_logit_softcapping", "attn_logit_softcapping"):
        if getattr(config, setting, None):
            raise PrunekitError(f"llama.cpp's gemma3 applies no {setting.replace('_', ' ')}, which this model sets; it has no GGUF form")
    for layer_type, rope in gemma3_rope(config).items():
        kind = (rope.get("rope_type") or rope.get("type") or "default").lower()
        if kind not in ("default", "linear") or (layer_type == "sliding_attention" and kind != "default"):
            raise PrunekitError(f"llama.cpp's gemma3 cannot apply this model's {kind} rope scaling on its {layer_type} layers")


def gemma3_rope(config) -> dict[str, dict]:
    """Gemma-3's rope settings per layer type (transformers keeps one dict per type; older configs a global
    `rope_theta` and `rope_local_base_freq`)."""
    parameters = dict(getattr(config, "rope_parameters", None) or {})
    if "full_attention" in parameters or "sliding_attention" in parameters:
        return {kind: dict(parameters.get(kind) or {}) for kind in ("full_attention", "sliding_attention")}
    full = {**dict(getattr(config, "rope_scaling", None) or {}), **parameters}
    full.setdefault("rope_theta", getattr(config, "rope_theta", 1_000_000.0))
    return {
        "full_attention": full,
        "sliding_attention": {"rope_type": "default", "rope_theta": getattr(config, "rope_local_base_freq", 10_000.0)},
    }
