"""LIAR as one registered method: decoders through prune_width, BERT-style encoders through the encoder variant."""

from __future__ import annotations

from prunekit.errors import ParameterError
from prunekit.methods.liar.allocation import LISTED
from prunekit.methods.liar.config import LiarConfig
from prunekit.methods.liar.decoder import prune_width
from prunekit.methods.liar.encoder import run_encoder_liar
from prunekit.models.encoders import is_encoder_config


def run_liar(model, config: LiarConfig, context) -> dict:
    """Decoders through prune_width; BERT-style encoders through the encoder variant (same config)."""
    if is_encoder_config(model.config):
        if config.allocation == LISTED:
            raise ParameterError("allocation", "listed is for decoder models; prune an encoder with a ratio")
        return run_encoder_liar(model, config, context)
    return prune_width(model, context.require_windows("liar", config.windows), config, **context.engine)


def describe_liar(d: dict) -> str:
    """One line saying what a LIAR stage did, from its details."""
    if d.get("model_kind") == "encoder":
        return (
            f"liar encoder: heads {d['heads_before']} -> {d['heads_after']}, FFN channels {d['intermediate_size_before']} -> "
            f"{d['intermediate_size_after']} per block ({d['criterion']} criterion, {d['reconstruction']} reconstruction)"
        )
    sizes = (
        "per-layer widths (load with prunekit.load_model)"
        if d["per_layer_widths"]
        else f"FFN channels {d['intermediate_size_before']} -> {d['intermediate_size_after']}, "
        f"KV groups {d['kv_heads_before']} -> {d['kv_heads_after']} per block"
    )
    return (
        f"liar: {sizes} ({d['criterion']} criterion, {d['reconstruction']} reconstruction, "
        f"{d['params_after'] / d['params_before']:.1%} of the parameters kept; {d['seconds']:.0f} s, "
        f"peak RSS {d.get('peak_rss_mib', 0):.0f} MiB)"
    )


def label_liar(d: dict) -> str:
    """A short name for the pruned model in reports."""
    if d.get("allocation") == LISTED:
        return f"liar listed widths (-{d['ffn_channels_removed']:.0%} FFN, -{d['kv_groups_removed']:.0%} KV)"
    return f"liar ffn {d['ffn_ratio']:.3g} heads {d['head_ratio']:.3g}" if "ffn_ratio" in d else "liar"
