"""IteRABRe's settings, checked when made: how many blocks go, how, and how the recovery budget is spent."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.errors import ParameterError
from prunekit.methods.depth.removal import DepthConfig
from prunekit.options import option
from prunekit.recovery import RecoveryConfig
from prunekit.scoring.blocks import check_metric

# Defaults from the equal-budget screening (README, "IteRABRe at an equal budget"): BI in the loop
# beat removal-cosine, and spending the whole budget once after the last removal beat a recovery after
# every removal. The paper's loop is metric removal-cosine with final_share 0.
DEFAULT_METRIC = "bi"
DEFAULT_FINAL_SHARE = 1.0
SCHEDULES = ("restart", "continuous")


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
