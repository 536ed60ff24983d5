"""The registered IteRABRe stage: its config, how `prune` runs it, and how a finished stage is described."""

from __future__ import annotations

from prunekit.methods.iterabre.config import IterabreConfig
from prunekit.methods.iterabre.loop import iterabre
from prunekit.methods.iterabre.run_directory import RunDirectory
from prunekit.models.adapters import parameter_count


def run_iterabre(model, config: IterabreConfig, context) -> dict:
    import tempfile

    teacher = context.teacher()
    resume, overwrite_run = config.resume, config.overwrite_run
    job = context.stage_checkpoints()
    with tempfile.TemporaryDirectory(prefix="prunekit-iterabre-") as scratch:
        run_dir = config.run_dir or scratch
        if config.run_dir is None and job is not None:  # the job's run directory keeps the iterations too
            run_dir = str(job.path)
            resume = job.resume and RunDirectory(run_dir).exists()
            overwrite_run = job.overwrite or job.resume
        plan = iterabre(
            model,
            teacher,
            context.require_windows("iterabre", config.windows),
            lambda: context.recovery_windows(config.recovery, teacher),
            config,
            run_dir=run_dir,
            heldout=context.heldout,
            resume=resume,
            overwrite_run=overwrite_run,
            run_info={"seed": context.seed, "recovery_data": context.recovery_data_identity()},
            **context.engine,
        )
    details = plan.to_dict()
    details["recovery"] = {**config.recovery.resolved(parameter_count(teacher)).to_dict(), "run_dir": config.run_dir}
    return details


def describe_iterabre(d: dict) -> str:
    """One line saying what an IteRABRe stage did, from its details."""
    trail = ", ".join(str(s["removed"]) for s in d["steps"] if not s.get("final"))
    last = d["steps"][-1].get("heldout_perplexity_after_recovery")
    final = " + a final recovery" if any(s.get("final") for s in d["steps"]) else ""
    iterations = sum(not s.get("final") for s in d["steps"])
    return (
        f"iterabre: removed blocks {trail} in {iterations} iterations{final} ({d['recovery']['tokens']} recovery tokens in all"
        f"{'' if last is None else f'; held-out ppl after the last {last:.2f}'})"
    )
