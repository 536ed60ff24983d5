"""Angular-distance span removal (Gromov et al., 2024): drop the n consecutive blocks whose input
and output are closest in angle."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.methods.depth.removal import DepthConfig, run_depth_plan
from prunekit.methods.plan import PrunePlan
from prunekit.scoring.blocks import scan_blocks


def plan_angular(model, windows, num_remove: int, *, protect: tuple[int, ...] = (), **engine) -> PrunePlan:
    """Score every span of `num_remove` blocks by arccos(cos(X_i, X_{i+n}))/pi; remove the smallest."""
    scores = scan_blocks(model, windows, "angular", span=num_remove, **engine)
    protected = set(protect)
    starts = [i for i in scores.ranking() if not protected.intersection(range(i, i + num_remove))]
    start = starts[0]
    return PrunePlan(
        method="angular",
        removed_blocks=list(range(start, start + num_remove)),
        num_blocks_before=len(scores.scores) + num_remove - 1,
        reason=f"blocks {start}..{start + num_remove - 1}: the span of {num_remove} with the smallest angular distance",
        metric="angular",
        scores=scores.scores,
        data=scores.data,
        scan_seconds=scores.seconds,
    )


@dataclass
class AngularConfig(DepthConfig):
    """Removes one span of consecutive blocks (its length is the count asked for)."""


def run_angular(model, config: AngularConfig, context) -> dict:
    return run_depth_plan(model, config, context, "angular", plan_angular)
