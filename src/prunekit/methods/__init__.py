"""Pruning methods, each a typed config plus a run function, registered once (see registry.py)."""

# Each method's folder registers it on import; this order is the order `method_names()` lists them in.
# isort: off
from prunekit.methods.depth import AngularConfig, DepthConfig, ShortGPTConfig, SLEBConfig, blocks_to_remove
from prunekit.methods.depth import plan_angular, plan_shortgpt, plan_sleb
from prunekit.methods.liar import LiarConfig
from prunekit.methods.iterabre import IterabreConfig
from prunekit.methods.flexigpt import ExtendConfig, FlexiGPTConfig

# isort: on
from prunekit.methods.plan import PLAN_FILE, Plan, PrunePlan
from prunekit.methods.recovery_stage import describe_recovery, run_recovery
from prunekit.methods.registry import (
    MethodSpec,
    StageContext,
    default_method,
    describe_stage,
    method_names,
    method_spec,
    offered_methods,
    register_method,
    stage_label,
)
from prunekit.recovery.config import RecoveryConfig

register_method(
    "recover",
    RecoveryConfig,
    run_recovery,
    summary="distil the dense model into the pruned one",
    needs_data=False,
    why_not_reapplicable="it trains, so run it again",
    skipped_on_replay=True,
    describe=describe_recovery,
    offered_as_method=False,
)

__all__ = [
    "AngularConfig",
    "DepthConfig",
    "ExtendConfig",
    "FlexiGPTConfig",
    "IterabreConfig",
    "LiarConfig",
    "MethodSpec",
    "PLAN_FILE",
    "Plan",
    "PrunePlan",
    "RecoveryConfig",
    "SLEBConfig",
    "ShortGPTConfig",
    "StageContext",
    "blocks_to_remove",
    "default_method",
    "describe_stage",
    "method_names",
    "offered_methods",
    "method_spec",
    "plan_angular",
    "plan_shortgpt",
    "plan_sleb",
    "register_method",
    "stage_label",
]
