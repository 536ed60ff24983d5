"""ShortGPT (Men et al., 2024): remove the blocks with the lowest Block Influence, in one shot."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.methods.depth.removal import DepthConfig, lowest_scoring, run_depth_plan
from prunekit.methods.plan import PrunePlan
from prunekit.options import option
from prunekit.scoring.blocks import check_metric, scan_blocks


def plan_shortgpt(model, windows, num_remove: int, *, metric: str = "bi", protect: tuple[int, ...] = (), **engine) -> PrunePlan:
    """One scan, then drop the `num_remove` lowest-scoring blocks (any metric; BI by default)."""
    scores = scan_blocks(model, windows, metric, **engine)
    removed = lowest_scoring(scores.scores, num_remove, protect)
    return PrunePlan(
        method="shortgpt",
        removed_blocks=removed,
        num_blocks_before=len(scores.scores),
        reason=f"the {num_remove} blocks with the lowest {metric} score",
        metric=metric,
        scores=scores.scores,
        data=scores.data,
        scan_seconds=scores.seconds,
    )


@dataclass
class ShortGPTConfig(DepthConfig):
    """One-shot removal of the lowest-scoring blocks; `metric` is any block score (BI in the paper)."""

    metric: str = option("bi", "block score: bi (default), angular, removal-cosine, removal-loss or taylor")

    def check(self) -> None:
        super().check()
        check_metric(self.metric, "metric")


def run_shortgpt(model, config: ShortGPTConfig, context) -> dict:
    return run_depth_plan(model, config, context, "shortgpt", plan_shortgpt, metric=config.metric)
