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


def describe_recovery(d: dict) -> str:
    """What a recovery run did; with the held-out perplexity `prunekit recover` measures before and after."""
    mfu = f", MFU {d['mfu']:.0%}" if d.get("mfu") is not None else ""
    text = (
        f"recover: {d['tokens']} tokens of {d['data']} in {d['steps']} steps, {d['seconds']:.0f} s ({d['tokens_per_second']:.0f} "
        f"tokens/s{mfu} on {d['device']}, micro-batch {d['micro_batch_size']}); "
        f"objective {d['loss_first']:.4f} -> {d['loss_last']:.4f}"
    )
    heldout = d.get("heldout")
    if heldout:
        text += (
            f"\nheld-out perplexity ({heldout['data']}, {heldout['windows']}x{heldout['seq_len']}): "
            f"{d['heldout_perplexity_before']:.2f} -> {d['heldout_perplexity_after']:.2f}"
        )
    return text
