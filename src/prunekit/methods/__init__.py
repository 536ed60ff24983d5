"""Depth-pruning methods, each a function (model, windows, num_remove, **options) -> PrunePlan."""

from prunekit.errors import PrunekitError
from prunekit.methods.angular import plan_angular
from prunekit.methods.plan import PLAN_FILE, PrunePlan
from prunekit.methods.shortgpt import plan_shortgpt
from prunekit.methods.sleb import plan_sleb

DEPTH_METHODS = {"shortgpt": plan_shortgpt, "angular": plan_angular, "sleb": plan_sleb}


def get_method(name: str):
    if name not in DEPTH_METHODS:
        raise PrunekitError(f"unknown method '{name}'; choose one of {', '.join(DEPTH_METHODS)}")
    return DEPTH_METHODS[name]


__all__ = ["DEPTH_METHODS", "PLAN_FILE", "PrunePlan", "get_method", "plan_angular", "plan_shortgpt", "plan_sleb"]
