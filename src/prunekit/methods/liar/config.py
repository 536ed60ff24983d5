"""LIAR's settings, checked once when a run is asked for (before any model is loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.errors import ParameterError
from prunekit.methods.depth import check_stage_windows
from prunekit.methods.liar.allocation import ALLOCATIONS, LISTED
from prunekit.methods.liar.reconstruction import RECONSTRUCTIONS, check_damping
from prunekit.options import check_types, option
from prunekit.scoring.channels import check_criterion

# `channel_multiple` auto: 64 for a real model's FFN (fast in llama.cpp and on GPUs; on SmolLM2-135M and
# Gemma-3 270M rounding cost no measured quality), unrounded for the tiny FFNs of test models.
AUTO_MULTIPLE = "auto"
AUTO_MULTIPLE_VALUE = 64
AUTO_MULTIPLE_MIN_WIDTH = 1024


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
    allocation: str = option(
        "uniform",
        "uniform (same widths everywhere), adaptive (per-layer widths; reload with prunekit.load_model) or listed "
        "(each layer's widths as given in `channels` and `kv_groups`)",
    )
    channels: tuple[int, ...] = option((), "allocation listed: FFN channels each layer keeps (one per layer)")
    kv_groups: tuple[int, ...] = option((), "allocation listed: KV groups each layer keeps (one per layer; default all)")
    min_keep: float = option(0.1, "allocation adaptive: least share of a layer's FFN channels kept")
    channel_multiple: int | str = option(
        "auto",
        "round each layer's kept FFN channels to the nearest multiple of N, for speed in llama.cpp and on GPUs; auto (default): 64 "
        "where the FFN is at least 1,024 channels wide, else 1 (no rounding)",
    )
    seed: int = option(0, "seed of the random criterion")
    windows: int | None = option(None, "calibration windows of this stage in a recipe (default: the method's own)", internal=True)

    def check(self) -> None:
        """Every check that needs no model, so a command fails before loading one."""
        check_types(self)
        if self.allocation == LISTED or self.channels or self.kv_groups:
            self._check_listed()
        elif self.ratio is not None:
            if self.ffn_ratio is not None or self.head_ratio not in (None, 0.0):
                raise ParameterError(
                    "ratio",
                    "(share of the block parameters) or ffn_ratio/head_ratio: give one, not both "
                    "(head_ratio 0 with `ratio` keeps every head)",
                )
            if not 0.0 < self.ratio < 1.0:
                raise ParameterError("ratio", f"{self.ratio} must be strictly between 0 and 1")
        elif self.ffn_ratio is None and self.head_ratio is None:
            raise ParameterError("ratio", "is missing: liar needs `ratio`, or ffn_ratio and/or head_ratio (fractions to remove, in [0, 1))")
        elif not (self.ffn_ratio or 0.0) and not (self.head_ratio or 0.0):
            raise ParameterError("ffn_ratio", "0 and no head_ratio remove nothing; give a ratio above 0")
        for name, value in (("ffn_ratio", self.ffn_ratio), ("head_ratio", self.head_ratio)):
            if value is not None and not 0.0 <= value < 1.0:
                raise ParameterError(name, f"{value} must be in [0, 1)")
        check_criterion(self.criterion)
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ParameterError("reconstruction", f"'{self.reconstruction}' is unknown; choose one of {', '.join(RECONSTRUCTIONS)}")
        if self.allocation not in ALLOCATIONS:
            raise ParameterError("allocation", f"'{self.allocation}' is unknown; choose one of {', '.join(ALLOCATIONS)}")
        if not 0.0 < self.min_keep <= 1.0:
            raise ParameterError("min_keep", f"{self.min_keep} must be in (0, 1]")
        multiple = self.channel_multiple
        if self.allocation == LISTED and multiple not in (AUTO_MULTIPLE, 1):
            raise ParameterError("channel_multiple", "does not apply to allocation listed, whose widths are used as given")
        if multiple != AUTO_MULTIPLE and (isinstance(multiple, str) or multiple < 1):
            raise ParameterError("channel_multiple", f"{multiple} must be at least 1, or {AUTO_MULTIPLE}")
        check_damping(self.damping)
        check_stage_windows(self.windows)

    def _check_listed(self) -> None:
        if self.allocation != LISTED:
            raise ParameterError("channels", "and kv_groups give each layer's widths; they need allocation listed")
        if self.ratio is not None or self.ffn_ratio is not None or self.head_ratio is not None:
            raise ParameterError("allocation", "listed takes each layer's widths from `channels`/`kv_groups`, not from a ratio")
        if not self.channels:
            raise ParameterError("channels", "is missing: allocation listed needs the FFN channels each layer keeps")
        if self.kv_groups and len(self.kv_groups) != len(self.channels):
            raise ParameterError("kv_groups", f"lists {len(self.kv_groups)} layers and channels {len(self.channels)}; give one per layer")
        for name, values in (("channels", self.channels), ("kv_groups", self.kv_groups)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ParameterError(name, "must list positive whole numbers, one per layer")
