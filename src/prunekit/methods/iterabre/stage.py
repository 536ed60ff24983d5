"""The registered IteRABRe stage: its config, how `prune` runs it, and how a finished stage is described."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prunekit.errors import ParameterError
from prunekit.methods.depth.removal import DepthConfig
from prunekit.methods.iterabre.loop import DEFAULT_FINAL_SHARE, DEFAULT_METRIC, SCHEDULES, IterabreSettings, iterabre
from prunekit.methods.iterabre.run_directory import RunDirectory
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.options import option
from prunekit.recovery import RecoveryConfig
from prunekit.scoring.blocks import check_metric


@dataclass
class IterabreConfig(DepthConfig):
    """IteRABRe: remove `per_step` blocks at a time, re-scoring the current model each time; `final_share`
    of `recovery.tokens` recovers every block after the last removal and the rest is split evenly into
    a recovery after each removal (default 1: all of it at the end, as measured best; 0 is the paper's
    loop). `target_blocks` (blocks left) may replace remove/ratio. `run_dir` keeps the per-iteration
    checkpoints (a temporary directory when None); `resume` continues a run there."""

    target_blocks: int | None = option(None, "remove blocks until this many remain")
    per_step: int = option(1, "blocks removed per iteration")
    metric: str = option(DEFAULT_METRIC, f"block score inside the loop (default {DEFAULT_METRIC}; angular scores each block alone, span 1)")
    recovery: RecoveryConfig = option(factory=RecoveryConfig, help="recovery after each removal")
    schedule: str = option("restart", "restart: warm-up and cosine decay in every iteration; continuous: one schedule over the run")
    final_share: float = option(
        DEFAULT_FINAL_SHARE,
        "share of the recovery budget for one recovery of every block after the last removal (default 1: none between removals; "
        "0: the paper's recovery after every removal)",
    )
    run_dir: str | None = option(None, "where iteration checkpoints and the log go")
    resume: bool = option(False, "continue the interrupted run in run_dir from its last finished iteration")
    overwrite_run: bool = option(False, "start over in a run_dir that holds an earlier run")

    def check(self) -> None:
        if self.target_blocks is not None:
            if self.remove is not None or self.ratio is not None:
                raise ParameterError("target_blocks", "replaces `remove` and `ratio`; give only one of the three")
        else:
            super().check()
        check_metric(self.metric, "metric")
        if self.per_step < 1:
            raise ParameterError("per_step", f"{self.per_step} must be at least 1")
        if self.recovery is None:
            raise ParameterError("tokens", "must be at least 1: IteRABRe recovers after every removal (use shortgpt for none)")
        if self.resume and self.run_dir is None:
            raise ParameterError("resume", "needs the run_dir of the interrupted run")
        if self.schedule not in SCHEDULES:  # before any model is loaded, not when the loop starts
            raise ParameterError("schedule", f"'{self.schedule}' is unknown; use one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.final_share <= 1.0:
            raise ParameterError("final_share", f"{self.final_share} must be in [0, 1]")
        self.recovery.check(has_teacher=True)

    def count(self, num_blocks: int) -> int:
        if self.target_blocks is None:
            return super().count(num_blocks)
        if not 1 <= self.target_blocks < num_blocks:
            raise ParameterError("target_blocks", f"{self.target_blocks} must be between 1 and {num_blocks - 1}")
        return num_blocks - self.target_blocks


def run_iterabre(model, config: IterabreConfig, context) -> dict:
    import tempfile

    num_blocks = ModelAdapter(model).num_blocks
    settings = IterabreSettings(
        remove=config.count(num_blocks),
        per_step=config.per_step,
        metric=config.metric,
        protect=config.protected(num_blocks),
        recovery=config.recovery,
        schedule=config.schedule,
        final_share=config.final_share,
    )
    settings.check(num_blocks)
    teacher = context.teacher()
    settings = replace(settings, recovery=config.recovery.resolved(parameter_count(teacher)))  # the rate iterabre() runs at
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
            settings,
            run_dir=run_dir,
            heldout=context.heldout,
            resume=resume,
            overwrite_run=overwrite_run,
            run_info={"seed": context.seed},
            **context.engine,
        )
    details = plan.to_dict()
    details["recovery"] = {**settings.recovery.to_dict(), "run_dir": config.run_dir}
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
