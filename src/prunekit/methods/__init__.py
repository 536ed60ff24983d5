"""Pruning methods, each a typed config plus a run function, registered once (see registry.py)."""

from prunekit.methods.angular import AngularConfig, plan_angular, run_angular
from prunekit.methods.depth import DepthConfig, blocks_to_remove, describe_removal, label_removal, reapply_removal
from prunekit.methods.flexigpt import ExtendConfig, FlexiGPTConfig, describe_extend, describe_flexigpt, run_extend, run_flexigpt
from prunekit.methods.iterabre import IterabreConfig, describe_iterabre, run_iterabre
from prunekit.methods.liar.stage import LiarConfig, describe_liar, label_liar, run_liar
from prunekit.methods.plan import PLAN_FILE, Plan, PrunePlan
from prunekit.methods.recovery_stage import describe_recovery, run_recovery
from prunekit.methods.registry import MethodSpec, StageContext, describe_stage, method_names, method_spec, register_method, stage_label
from prunekit.methods.shortgpt import ShortGPTConfig, plan_shortgpt, run_shortgpt
from prunekit.methods.sleb import SLEBConfig, plan_sleb, run_sleb
from prunekit.recovery.config import RecoveryConfig

register_method(
    "shortgpt",
    ShortGPTConfig,
    run_shortgpt,
    summary="one-shot removal of the lowest-scoring blocks (BI)",
    reapply=reapply_removal,
    removes_blocks=True,
    describe=describe_removal,
    label=label_removal,
)
register_method(
    "angular",
    AngularConfig,
    run_angular,
    summary="removal of the span of blocks closest in angle",
    reapply=reapply_removal,
    removes_blocks=True,
    describe=describe_removal,
    label=label_removal,
)
register_method(
    "sleb",
    SLEBConfig,
    run_sleb,
    summary="greedy removal re-scored after each step",
    reapply=reapply_removal,
    removes_blocks=True,
    describe=describe_removal,
    label=label_removal,
)
register_method(
    "liar",
    LiarConfig,
    run_liar,
    summary="width pruning with least-squares reconstruction",
    why_not_reapplicable="its reconstruction is computed from calibration data, so run it again with the same settings and seed",
    rerun_from_plan=True,
    calibration_windows=64,
    describe=describe_liar,
    label=label_liar,
)
register_method(
    "iterabre",
    IterabreConfig,
    run_iterabre,
    summary="iterative removal with recovery after each step",
    removes_blocks=True,
    why_not_reapplicable="its weights come from recovery training; keep its checkpoint",
    own_run_directory=True,
    logs_heldout=True,
    describe=describe_iterabre,
    label=label_removal,
)
register_method(
    "flexigpt",
    FlexiGPTConfig,
    run_flexigpt,
    summary="replace blocks by shared blocks with adapters",
    why_not_reapplicable="its adapters come from the weights and training, so run it again",
    describe=describe_flexigpt,
)
register_method(
    "extend",
    ExtendConfig,
    run_extend,
    summary="grow the model deeper with shared blocks",
    needs_data=False,
    why_not_reapplicable="its adapters come from training, so run it again",
    describe=describe_extend,
)
register_method(
    "recover",
    RecoveryConfig,
    run_recovery,
    summary="distil the dense model into the pruned one",
    needs_data=False,
    why_not_reapplicable="it trains, so run it again",
    skipped_on_replay=True,
    describe=describe_recovery,
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
    "describe_stage",
    "method_names",
    "method_spec",
    "plan_angular",
    "plan_shortgpt",
    "plan_sleb",
    "register_method",
    "stage_label",
]
