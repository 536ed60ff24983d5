"""LIAR as one registered method: decoders through prune_width, BERT-style encoders through the encoder variant."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.methods.depth import check_stage_windows
from prunekit.methods.liar.decoder import check_width_options, prune_width
from prunekit.methods.liar.encoder import run_encoder_liar
from prunekit.methods.liar.reconstruction import check_damping
from prunekit.models.encoders import is_encoder_config
from prunekit.options import check_types, option


@dataclass
class LiarConfig:
    """LIAR width pruning: `ratio` of every block's parameters (spent on FFN channels unless
    `ratio_heads`), or `ffn_ratio` / `head_ratio` of its FFN channels / KV groups; the pruned
    inputs are folded into the consuming projection by `reconstruction` (see prune_width)."""

    ratio: float | None = option(None, "fraction of every block's parameters to remove (spent on FFN channels)")
    ffn_ratio: float | None = option(None, "fraction of every block's FFN channels to remove")
    head_ratio: float | None = option(None, "fraction of every block's KV groups (with their query heads) to remove")
    ratio_heads: bool = option(False, "with ratio: let whole KV groups take part")
    criterion: str = option("wanda", "magnitude, wanda, fluctuation, taylor (one gradient pass) or random")
    reconstruction: str = option("liar", "none, bias (FLAP) or liar (least squares)")
    damping: float | str = option(
        "auto", "ridge damping relative to the mean Gram diagonal, or auto (chosen on held-out calibration batches)"
    )
    allocation: str = option("uniform", "uniform (same widths everywhere) or adaptive (per-layer widths; reload with prunekit.load_model)")
    min_keep: float = option(0.1, "allocation adaptive: least share of a layer's FFN channels kept")
    channel_multiple: int | str = option(
        "auto",
        "round each layer's kept FFN channels to the nearest multiple of N, for speed in llama.cpp and on GPUs; auto (default): 64 "
        "where the FFN is at least 1,024 channels wide, else 1 (no rounding)",
    )
    seed: int = option(0, "seed of the random criterion")
    windows: int | None = option(None, "calibration windows of this stage in a recipe (default: the method's own)", internal=True)

    def check(self) -> None:
        check_types(self)
        check_width_options(
            self.ffn_ratio,
            self.head_ratio,
            self.criterion,
            self.reconstruction,
            self.ratio,
            self.allocation,
            self.min_keep,
            self.channel_multiple,
        )
        check_damping(self.damping)
        check_stage_windows(self.windows)


def run_liar(model, config: LiarConfig, context) -> dict:
    """Decoders through prune_width; BERT-style encoders through the encoder variant (same config)."""
    if is_encoder_config(model.config):
        return run_encoder_liar(model, config, context)
    options = {
        k: getattr(config, k)
        for k in (
            "ratio",
            "ffn_ratio",
            "head_ratio",
            "ratio_heads",
            "criterion",
            "reconstruction",
            "damping",
            "allocation",
            "min_keep",
            "channel_multiple",
            "seed",
        )
    }
    return prune_width(model, context.require_windows("liar", config.windows), **options, **context.engine)


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
    return f"liar ffn {d['ffn_ratio']:.3g} heads {d['head_ratio']:.3g}" if "ffn_ratio" in d else "liar"
