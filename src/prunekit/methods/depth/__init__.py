"""One-shot block removal: ShortGPT (lowest Block Influence), angular distance (the closest span of blocks) and
SLEB (greedy, re-scored after each removal).

removal.py: what every block-removal method is asked (how many blocks go, which may never go) and how a
removal is re-applied and described; shortgpt.py, angular.py, sleb.py: the three methods.
"""

from prunekit.methods.depth.angular import AngularConfig, plan_angular, run_angular
from prunekit.methods.depth.listed import ListedBlocksConfig, run_listed_blocks
from prunekit.methods.depth.removal import (
    DepthConfig,
    blocks_to_remove,
    check_protected,
    check_stage_windows,
    describe_removal,
    label_removal,
    lowest_scoring,
    reapply_removal,
    run_depth_plan,
)
from prunekit.methods.depth.shortgpt import ShortGPTConfig, plan_shortgpt, run_shortgpt
from prunekit.methods.depth.sleb import SLEBConfig, plan_sleb, run_sleb
from prunekit.methods.registry import register_method

REMOVAL = {"reapply": reapply_removal, "removes_blocks": True, "describe": describe_removal, "label": label_removal}
register_method(
    "shortgpt", ShortGPTConfig, run_shortgpt, summary="one-shot removal of the lowest-scoring blocks (BI)", is_default=True, **REMOVAL
)
register_method("angular", AngularConfig, run_angular, summary="removal of the span of blocks closest in angle", **REMOVAL)
register_method("sleb", SLEBConfig, run_sleb, summary="greedy removal re-scored after each step", **REMOVAL)
register_method("blocks", ListedBlocksConfig, run_listed_blocks, summary="removal of listed blocks (no data)", needs_data=False, **REMOVAL)

__all__ = [
    "AngularConfig",
    "DepthConfig",
    "ListedBlocksConfig",
    "SLEBConfig",
    "ShortGPTConfig",
    "blocks_to_remove",
    "check_protected",
    "check_stage_windows",
    "describe_removal",
    "label_removal",
    "lowest_scoring",
    "plan_angular",
    "plan_shortgpt",
    "plan_sleb",
    "reapply_removal",
    "run_depth_plan",
]
