"""What every block-removal method is asked: how many blocks go, and which may never go."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.errors import ParameterError
from prunekit.methods.plan import PrunePlan
from prunekit.models.adapters import ModelAdapter
from prunekit.options import check_types, option


def blocks_to_remove(num_blocks: int, remove: int | None = None, ratio: float | None = None) -> int:
    """How many blocks `remove=N` or `ratio=R` (fraction of blocks) asks for, checked."""
    if (remove is None) == (ratio is None):
        raise ParameterError("remove", "or `ratio`: give exactly one (blocks to remove, or their fraction)")
    if ratio is not None:
        if not 0.0 < ratio < 1.0:
            raise ParameterError("ratio", f"{ratio} must be strictly between 0 and 1")
        remove = round(ratio * num_blocks)
        if remove < 1:
            raise ParameterError("ratio", f"{ratio} of {num_blocks} blocks removes nothing; use a larger ratio")
    if remove < 1:
        raise ParameterError("remove", f"{remove} must be at least 1")
    if remove >= num_blocks:
        raise ParameterError("remove", f"{remove} must be smaller than the number of blocks ({num_blocks})")
    return remove


def check_protected(protect: tuple[int, ...], num_blocks: int) -> None:
    outside = sorted(i for i in set(protect) if not 0 <= i < num_blocks)
    if outside:
        raise ParameterError("protect", f"block(s) {', '.join(map(str, outside))} not in this model (blocks 0..{num_blocks - 1})")


@dataclass
class DepthConfig:
    """remove (a count) or ratio (a fraction of the blocks); protect: block indices never removed."""

    remove: int | None = option(None, "number of blocks to remove")
    ratio: float | None = option(None, "fraction of blocks to remove, in (0, 1)")
    protect: tuple[int, ...] = option((), "block indices never removed")
    protect_ends: bool = option(False, "never remove the first and the last block")
    windows: int | None = option(None, "calibration windows of this stage in a recipe (default: the method's own)", internal=True)

    def check(self) -> None:
        """The checks that need no model."""
        check_types(self)
        if (self.remove is None) == (self.ratio is None):
            raise ParameterError("remove", "or `ratio`: give exactly one (blocks to remove, or their fraction)")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise ParameterError("ratio", f"{self.ratio} must be strictly between 0 and 1")
        if self.remove is not None and self.remove < 1:
            raise ParameterError("remove", f"{self.remove} must be at least 1")
        check_stage_windows(self.windows)

    def count(self, num_blocks: int) -> int:
        return blocks_to_remove(num_blocks, self.remove, self.ratio)

    def protected(self, num_blocks: int) -> tuple[int, ...]:
        check_protected(tuple(self.protect), num_blocks)
        ends = {0, num_blocks - 1} if self.protect_ends else set()
        return tuple(sorted(set(self.protect) | ends))


def lowest_scoring(scores: list[float], count: int, protect: tuple[int, ...] = ()) -> list[int]:
    """The `count` least important indices, never one in `protect`."""
    check_protected(protect, len(scores))
    order = sorted((i for i in range(len(scores)) if i not in set(protect)), key=lambda i: (scores[i], i))
    return sorted(order[:count])


def check_stage_windows(windows: int | None) -> None:
    if windows is not None and windows < 1:
        raise ParameterError("windows", f"{windows} must be at least 1 (calibration windows of the stage)")


def reapply_removal(model, details: dict) -> None:
    """Remove the recorded blocks again (a depth plan needs no data to repeat)."""
    PrunePlan.from_dict(details).apply(model)


def run_depth_plan(model, config: DepthConfig, context, method: str, planner, **options) -> dict:
    """A one-shot depth method as a registered run: plan on the calibration windows, remove the planned
    blocks in place, return the plan's record. `planner(model, windows, count, protect=..., **options)`."""
    num_blocks = ModelAdapter(model).num_blocks
    plan = planner(
        model,
        context.require_windows(method, config.windows),
        config.count(num_blocks),
        protect=config.protected(num_blocks),
        **options,
        **context.engine,
    )
    plan.apply(model)
    unfilled = ("model", "params_before", "params_after", "versions", "created", "format")  # the whole plan's record says these
    return {key: value for key, value in plan.to_dict().items() if key not in unfilled}


def describe_removal(d: dict) -> str:
    """One line for a one-shot depth stage."""
    return f"{d.get('method', 'depth')}: removed blocks {d['removed_blocks']} of {d['num_blocks_before']} ({d.get('reason', '')})"


def label_removal(d: dict) -> str:
    return f"{d.get('method', 'depth')} -{len(d['removed_blocks'])}"
