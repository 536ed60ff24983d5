"""Recovery as a recipe stage: distil the dense model into the pruned one on a token budget."""

from __future__ import annotations

from prunekit.recovery import RecoveryConfig, recover


def recover_in_context(model, config: RecoveryConfig, context) -> dict:
    """One recovery run on the context's data; the dense teacher is made only where it distils or
    samples the data. Returns the run's record without the per-step history."""
    distils = bool(config.kd_weight or config.hidden_weight)
    teacher = context.teacher() if distils or context.recovery_data == "self" else None
    windows = context.recovery_source(config, teacher)
    result = recover(
        model,
        windows,
        config,
        teacher=teacher if distils else None,
        device=context.device,
        progress=context.progress,
        checkpoints=context.stage_checkpoints(),
    )
    return {k: v for k, v in result.to_dict().items() if k != "history"}


def run_recovery(model, config: RecoveryConfig, context) -> dict:
    return {"method": "recover", **recover_in_context(model, config, context)}
