"""The registered FlexiGPT stages (replace, extend): their configs, how `prune` runs them, and their descriptions."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from prunekit.engine.sequential import SequentialRunner
from prunekit.errors import ParameterError
from prunekit.methods.depth.removal import DepthConfig, lowest_scoring
from prunekit.methods.flexigpt.blocks import DEFAULT_NORM_SCALE, DISTANCES, MEASURED, PATTERNS, extend_model, replace_blocks
from prunekit.methods.recovery_stage import recover_in_context
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.shared_checkpoint import merge_shared_blocks
from prunekit.options import check_types, option
from prunekit.recovery import RecoveryConfig
from prunekit.scoring.blocks import check_metric, scan_blocks

log = logging.getLogger(__name__)

# Measured at 9 of 30 blocks, 50k tokens (benchmarks/equal_budget.py --table flexigpt): the paper's 4e-3 for the
# adapters with the output-norm scales at 1e-1 gave 77.86 ppl, against 106.70 with the scales at 4e-3 and 124.10
# at 1e-3. The scales start at 0.01 and must grow before the replacement blocks contribute.
DEFAULT_ADAPTER_LR = 4e-3
DEFAULT_NORM_SCALE_LR = 1e-1


def _adapter_recovery() -> RecoveryConfig:
    return RecoveryConfig(scope="adapters", learning_rate=DEFAULT_ADAPTER_LR, norm_scale_learning_rate=DEFAULT_NORM_SCALE_LR)


@dataclass
class SharedBlockOptions:
    """The shared blocks' own settings (FlexiGPT and extend)."""

    rank: int | None = option(None, "adapter rank (default hidden_size/16, e.g. 36 for a 576-wide model)")
    output_norm: float | str | None = option(
        DEFAULT_NORM_SCALE,
        f"initial scale of the output normalisation (default {DEFAULT_NORM_SCALE}); flexigpt: 'measured' starts each channel at "
        "the replaced block's measured output RMS; none leaves the norm out",
    )
    merge: bool = option(False, "write a plain checkpoint (no memory saving; needs output_norm none)")

    def check_shared(self) -> None:
        check_types(self)
        if self.rank is not None and self.rank < 1:
            raise ParameterError("rank", f"{self.rank} must be at least 1")
        if isinstance(self.output_norm, str) and self.output_norm != MEASURED:
            raise ParameterError("output_norm", f"'{self.output_norm}' is neither a number, '{MEASURED}' nor none")
        if self.merge and self.output_norm is not None:
            raise ParameterError("merge", "needs `output_norm` none: output normalisation has no equivalent in a plain checkpoint")


@dataclass
class FlexiGPTConfig(DepthConfig, SharedBlockOptions):
    """Replace the `remove` (or `ratio` of) lowest-`metric` blocks by shared blocks with adapters, then
    train the adapters on `recovery` (None: no training)."""

    metric: str = option("bi", "block score choosing the blocks to replace")
    svd_init: bool = option(True, "start the adapters from the SVD of the weight difference", flag="--no-svd-init")
    distance: str = option("low-rank", "low-rank or frobenius: how the shared block is chosen")
    recovery: RecoveryConfig | None = option(factory=_adapter_recovery, help="adapter training (None: none)", config=RecoveryConfig)

    def check(self) -> None:
        super().check()
        self.check_shared()
        check_metric(self.metric, "metric")
        if self.distance not in DISTANCES:
            raise ParameterError("distance", f"'{self.distance}' is unknown; use one of {', '.join(DISTANCES)}")
        if self.recovery is not None:
            self.recovery.check(has_teacher=True)


def _extend_recovery() -> RecoveryConfig:
    # The replacement blocks' rates serve the repeats too. Measured at 30 -> 36 blocks, 200k tokens of C4
    # (benchmarks/equal_budget.py --table extend): 27.93 WikiText-2 ppl against 29.08 at the former 1e-4, which
    # left the output-norm scales at their 0.01 start and the model where it began (dense: 29.16).
    return RecoveryConfig(
        scope="adapters", kd_weight=0.0, lm_weight=1.0, learning_rate=DEFAULT_ADAPTER_LR, norm_scale_learning_rate=DEFAULT_NORM_SCALE_LR
    )


@dataclass
class ExtendConfig(SharedBlockOptions):
    """Grow the model to `to_blocks` blocks of repeated shared blocks (see extend_model), then train
    the new adapters on `recovery` (None: no training; by default next-token loss on the data)."""

    to_blocks: int = option(0, "number of blocks after extension")
    pattern: str = option("block", "block: each repeat right after its source; sequential: the last blocks repeated as one run")
    seed: int = option(0, "seed of the new adapters")
    recovery: RecoveryConfig | None = option(factory=_extend_recovery, help="adapter training (None: none)", config=RecoveryConfig)

    def check(self) -> None:
        self.check_shared()
        if self.output_norm == MEASURED:
            raise ParameterError("output_norm", f"'{MEASURED}' needs a replaced block to measure; extend repeats blocks, give a number")
        if self.to_blocks < 2:
            raise ParameterError("to_blocks", f"{self.to_blocks} must be the number of blocks after extension")
        if self.pattern not in PATTERNS:
            raise ParameterError("pattern", f"'{self.pattern}' is unknown; use one of {', '.join(PATTERNS)}")
        if self.recovery is not None:
            self.recovery.check(has_teacher=True)


def measured_output_rms(model, windows, blocks: list[int], engine: dict) -> dict[int, dict[str, torch.Tensor]]:
    """Per-channel RMS over the calibration tokens of the attention and MLP output projections of `blocks`
    (what their replacements' output normalisation should start at)."""
    adapter = ModelAdapter(model)
    sums = {i: {"attention": 0.0, "mlp": 0.0} for i in blocks}
    counts = {i: 0 for i in blocks}

    def hook(index: int, part: str):
        def record(module, args, output):
            flat = output.detach().float().reshape(-1, output.shape[-1])
            sums[index][part] = sums[index][part] + flat.pow(2).sum(0).cpu()
            if part == "mlp":
                counts[index] += flat.shape[0]

        return record

    handles = [adapter.attention_output(i).register_forward_hook(hook(i, "attention")) for i in blocks]
    handles += [adapter.mlp_output(i).register_forward_hook(hook(i, "mlp")) for i in blocks]
    try:
        runner = SequentialRunner(model, **{**engine, "progress": False})
        runner.run_blocks(runner.capture(windows.input_ids), range(max(blocks) + 1))
    finally:
        for handle in handles:
            handle.remove()
    return {i: {part: (total / max(1, counts[i])).sqrt() for part, total in sums[i].items()} for i in blocks}


def set_output_norm_scales(model, scales: dict[int, dict[str, torch.Tensor]]) -> None:
    """Start each replaced block's output normalisation at the given per-channel scales."""
    adapter = ModelAdapter(model)
    with torch.no_grad():
        for index, parts in scales.items():
            for part, module in (("attention", adapter.attention_output(index)), ("mlp", adapter.mlp_output(index))):
                module.norm.scale.copy_(parts[part].to(module.norm.scale.dtype))


def run_flexigpt(model, config: FlexiGPTConfig, context) -> dict:
    num_blocks = ModelAdapter(model).num_blocks
    count, protect = config.count(num_blocks), config.protected(num_blocks)
    windows = context.require_windows("flexigpt", config.windows)
    scores = scan_blocks(model, windows, config.metric, **context.engine)
    replaced = lowest_scoring(scores.scores, count, protect)
    measured = measured_output_rms(model, windows, replaced, context.engine) if config.output_norm == MEASURED else None
    record = replace_blocks(
        model,
        replaced,
        rank=config.rank,
        output_norm=1.0 if measured else config.output_norm,
        svd_init=config.svd_init,
        distance=config.distance,
        progress=context.progress,
    )
    if measured:
        set_output_norm_scales(model, measured)
        record["output_norm"] = MEASURED
    recovery = None if config.recovery is None else recover_in_context(model, config.recovery, context)
    if config.merge:
        merge_shared_blocks(model)
    return {
        "method": "flexigpt",
        "num_blocks_before": num_blocks,
        "metric": config.metric,
        "scores": scores.scores,
        "data": windows.summary(),
        **record,
        "recovery": recovery,
        "merged": config.merge,
        "params_after": parameter_count(model),
    }


def run_extend(model, config: ExtendConfig, context) -> dict:
    record = extend_model(
        model, config.to_blocks, pattern=config.pattern, rank=config.rank, output_norm=config.output_norm, seed=config.seed
    )
    if config.recovery is None:
        log.warning(
            "extend: no adapter training (`tokens` 0); the %d new blocks keep their untrained adapters and scales, "
            "so the model is not yet better than the one it grew from: give a training budget",
            record["blocks_after"] - record["blocks_before"],
        )
        record["recovery"] = None
    else:
        record["recovery"] = recover_in_context(model, config.recovery, context)
    if config.merge:
        merge_shared_blocks(model)
    return {"method": "extend", **record, "merged": config.merge, "params_after": parameter_count(model)}


def describe_flexigpt(d: dict) -> str:
    trained = f", trained on {d['recovery']['tokens']} tokens" if d.get("recovery") else ""
    return (
        f"flexigpt: blocks {d['replaced_blocks']} replaced by shared blocks {d['shares_with']} + rank-{d['rank']} adapters "
        f"({d['own_parameters_fraction_of_block']:.1%} of a block each{trained})"
    )


def describe_extend(d: dict) -> str:
    trained = f", trained on {d['recovery']['tokens']} tokens" if d.get("recovery") else ", adapters untrained"
    return f"extend: {d['blocks_before']} -> {d['blocks_after']} blocks ({d['pattern']} pattern, rank {d['rank']}{trained})"
