"""FlexiGPT (Smith et al., 2025): replace pruned blocks by a shared copy of a similar block plus its own
SVD-initialised LoRA and output normalisation; the same blocks grow a model deeper (`extend`).

blocks.py: block distances, replace_blocks and extend_model; stage.py: the registered methods (FlexiGPTConfig,
ExtendConfig), their recovery defaults and descriptions.
"""

from prunekit.methods.flexigpt.blocks import distance_table, extend_model, low_rank_distance, replace_blocks
from prunekit.methods.flexigpt.stage import (
    ExtendConfig,
    FlexiGPTConfig,
    describe_extend,
    describe_flexigpt,
    measured_output_rms,
    run_extend,
    run_flexigpt,
)
from prunekit.methods.registry import register_method

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
    command_help="grow a model deeper by repeating blocks with their own adapters (FlexiGPT)",
)

__all__ = [
    "ExtendConfig",
    "FlexiGPTConfig",
    "describe_extend",
    "describe_flexigpt",
    "distance_table",
    "extend_model",
    "low_rank_distance",
    "measured_output_rms",
    "replace_blocks",
    "run_extend",
    "run_flexigpt",
]
