"""How many KV groups and FFN channels every layer keeps: uniform, or adaptive by global ranking.

Uniform widths keep the same count in every layer (a standard config). Adaptive widths follow
FLAP's structure search: each layer's unit scores are standardised within the layer and the module
type (z-scores), a KV group scores the mean z of its channels, every unit is weighed by the
parameters it owns, and units are kept from the highest z down until the parameter budget is
spent. A per-layer floor (at least `min_keep` of a layer's FFN channels and one KV group) stops
the ranking from emptying a layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prunekit.errors import ParameterError, PrunekitError

LISTED = "listed"  # each layer's widths given (a fitted structure, or one written by hand)
ALLOCATIONS = ("uniform", "adaptive", LISTED)


@dataclass(frozen=True)
class LayerWidth:
    """Units one layer keeps."""

    kv_groups: int
    channels: int


def uniform_widths(num_layers: int, num_kv: int, width: int, head_ratio: float, ffn_ratio: float) -> list[LayerWidth]:
    keep_groups = num_kv - int(round(head_ratio * num_kv))
    keep_channels = width - int(round(ffn_ratio * width))
    return [LayerWidth(keep_groups, keep_channels)] * num_layers


def listed_widths(channels: tuple[int, ...], kv_groups: tuple[int, ...], num_layers: int, num_kv: int, width: int) -> list[LayerWidth]:
    """The widths a config lists, checked against the model (one per layer, within the layer's own counts)."""
    if len(channels) != num_layers:
        raise ParameterError("channels", f"lists {len(channels)} layers; this model has {num_layers}")
    groups = tuple(kv_groups) or (num_kv,) * num_layers
    if max(channels) > width:
        raise ParameterError("channels", f"keeps {max(channels)} FFN channels in a layer; this model's layers have {width}")
    if max(groups) > num_kv:
        raise ParameterError("kv_groups", f"keeps {max(groups)} KV groups in a layer; this model's layers have {num_kv}")
    return [LayerWidth(g, c) for g, c in zip(groups, channels)]


def standardised(scores: torch.Tensor) -> torch.Tensor:
    """z-scores within one layer (a constant layer scores 0 everywhere)."""
    scores = scores.double()
    std = scores.std() if scores.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)
    return (scores - scores.mean()) / std if std > 0 else torch.zeros_like(scores)


def _floor_channels(width: int, min_keep: float) -> int:
    return max(1, math.ceil(min_keep * width))


def adaptive_widths(
    group_scores: list[torch.Tensor] | None,
    channel_scores: list[torch.Tensor] | None,
    *,
    group_cost: int,
    channel_cost: int,
    width: int,
    num_kv: int,
    ratio: float | None = None,
    head_ratio: float = 0.0,
    ffn_ratio: float = 0.0,
    min_keep: float = 0.1,
) -> list[LayerWidth]:
    """Per-layer kept counts from per-layer unit scores (higher = more important).

    `ratio` ranks KV groups and FFN channels together against one budget (that share of their
    parameters); otherwise each module type has its own budget (`head_ratio`, `ffn_ratio`). A module
    type whose scores are None keeps every unit.
    """
    if not 0.0 < min_keep <= 1.0:
        raise ParameterError("min_keep", f"{min_keep} must be in (0, 1]")
    layers = len(channel_scores if channel_scores is not None else group_scores)
    # Units: (z-score, cost, layer, kind); the per-layer floor is forced in with an infinite score.
    pools: dict[str, list[tuple[float, int, int, str]]] = {}

    def add(kind: str, per_layer: list[torch.Tensor], cost: int, floor: int, pool: str) -> None:
        for layer, scores in enumerate(per_layer):
            z = standardised(scores)
            top = set(torch.topk(z, floor).indices.tolist())
            pools.setdefault(pool, []).extend(
                (math.inf if i in top else float(value), cost, layer, kind) for i, value in enumerate(z.tolist())
            )

    joint = ratio is not None
    if group_scores is not None and (joint or head_ratio > 0):
        add("group", group_scores, group_cost, 1, "joint" if joint else "group")
    if channel_scores is not None and (joint or ffn_ratio > 0):
        add("channel", channel_scores, channel_cost, _floor_channels(width, min_keep), "joint" if joint else "channel")
    budgets = {"joint": ratio, "group": head_ratio, "channel": ffn_ratio}
    kept = {"group": [0] * layers, "channel": [0] * layers}
    untouched = {kind for kind in kept if not any(kind == unit[3] for pool in pools.values() for unit in pool)}
    for pool, units in pools.items():
        total = sum(unit[1] for unit in units)
        allowed = (1.0 - budgets[pool]) * total
        floor_cost = sum(unit[1] for unit in units if unit[0] == math.inf)
        if floor_cost > allowed + 1e-9:
            raise PrunekitError(
                f"the per-layer floor alone keeps {floor_cost / total:.0%} of the prunable parameters, more than "
                f"the {1 - budgets[pool]:.0%} allowed; lower `min_keep` or the ratio"
            )
        spent = 0.0
        for score, cost, layer, kind in sorted(units, key=lambda unit: -unit[0]):
            if spent + cost > allowed + 1e-9:
                if score == math.inf:
                    raise AssertionError("floor units are affordable (checked above)")
                continue  # a cheaper unit further down may still fit
            spent += cost
            kept[kind][layer] += 1
    groups = [num_kv] * layers if "group" in untouched else kept["group"]
    channels = [width] * layers if "channel" in untouched else kept["channel"]
    return [LayerWidth(g, c) for g, c in zip(groups, channels)]
