"""The Python entry points the CLI is a thin layer over: prune a model by a method or a plan."""

from __future__ import annotations

import copy

from prunekit.errors import PrunekitError
from prunekit.methods import PrunePlan, get_method
from prunekit.models.adapters import ModelAdapter, parameter_count


def blocks_to_remove(num_blocks: int, remove: int | None = None, ratio: float | None = None) -> int:
    """How many blocks `--remove N` or `--ratio R` (fraction of blocks) asks for, checked."""
    if (remove is None) == (ratio is None):
        raise PrunekitError("give exactly one of --remove N or --ratio R")
    if ratio is not None:
        if not 0.0 < ratio < 1.0:
            raise PrunekitError(f"--ratio {ratio} must be strictly between 0 and 1")
        remove = round(ratio * num_blocks)
        if remove < 1:
            raise PrunekitError(f"--ratio {ratio} of {num_blocks} blocks removes nothing; use a larger ratio")
    if remove < 1:
        raise PrunekitError(f"--remove {remove} must be at least 1")
    if remove >= num_blocks:
        raise PrunekitError(f"--remove {remove} must be smaller than the number of blocks ({num_blocks})")
    return remove


def prune(model, windows=None, *, method: str = "shortgpt", remove: int | None = None, ratio: float | None = None,
          plan: PrunePlan | None = None, inplace: bool = False, **options):
    """Prune `model` by `method` (scored on calibration `windows`) or by a saved `plan`.

    Returns (pruned model, plan). The input model is left untouched unless `inplace=True`, which
    saves the memory of a copy.
    """
    num_blocks = ModelAdapter(model).num_blocks
    if plan is None:
        if windows is None:
            raise PrunekitError(f"method '{method}' needs calibration data (windows)")
        count = blocks_to_remove(num_blocks, remove, ratio)
        plan = get_method(method)(model, windows, count, **options)
    params_before = parameter_count(model)
    target = model if inplace else copy.deepcopy(model)
    plan.apply(target)
    plan.params_before, plan.params_after = params_before, parameter_count(target)
    return target, plan
