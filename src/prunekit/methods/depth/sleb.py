"""SLEB (Song et al., 2024): greedy iterative removal, each step dropping the block whose removal
raises the calibration loss least, re-scored on the already-pruned model; no retraining."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prunekit.engine.sequential import SequentialRunner
from prunekit.methods.depth.removal import DepthConfig, run_depth_plan
from prunekit.methods.plan import PrunePlan
from prunekit.models.adapters import ModelAdapter
from prunekit.options import option
from prunekit.scoring.blocks import check_metric, removal_scores


def plan_sleb(
    model,
    windows,
    num_remove: int,
    *,
    metric: str = "removal-loss",
    protect: tuple[int, ...] = (),
    device=None,
    offload: bool = False,
    batch_size: int = 1,
    progress: bool = True,
) -> PrunePlan:
    """Greedy removal scored on a virtually pruned model (the real one is untouched)."""
    started = time.perf_counter()
    runner = SequentialRunner(model, device=device, offload=offload, batch_size=batch_size, progress=progress)
    inputs = runner.capture(windows.input_ids)
    active = list(range(ModelAdapter(model).num_blocks))
    steps = []
    for step in range(num_remove):
        scores, details = removal_scores(runner, inputs, windows, metric, active)
        candidates = [p for p, block in enumerate(active) if block not in set(protect)]
        best = min(candidates, key=lambda p: (scores[p], active[p]))
        steps.append({"step": step + 1, "removed": active[best], "score": scores[best], "scores": dict(zip(active, scores)), **details})
        del active[best]
    first = steps[0]["scores"]
    return PrunePlan(
        method="sleb",
        removed_blocks=[s["removed"] for s in steps],
        num_blocks_before=len(first),
        reason=f"greedy: {num_remove} steps, each removing the block with the lowest {metric} on the pruned model",
        metric=metric,
        scores=[first[i] for i in range(len(first))],
        data=windows.summary(),
        steps=steps,
        scan_seconds=time.perf_counter() - started,
    )


@dataclass
class SLEBConfig(DepthConfig):
    """Greedy removal, re-scored after each step on the pruned model; `metric` is removal-loss or removal-cosine."""

    metric: str = option("removal-loss", "block score re-measured after each removal (default removal-loss)")

    def check(self) -> None:
        super().check()
        check_metric(self.metric, "metric")


def run_sleb(model, config: SLEBConfig, context) -> dict:
    return run_depth_plan(model, config, context, "sleb", plan_sleb, metric=config.metric)
