"""IteRABRe (Wibowo et al., 2025): remove blocks one step at a time, recovering after each removal.

Each iteration scores every remaining block on the *current* (already pruned and recovered) model,
removes the least important one (or `per_step` of them), then distils the dense teacher into the
pruned model on its share of the recovery token budget. Every finished iteration is checkpointed
in a run directory, so an interrupted run resumes from the last finished iteration and, with the
same seed, ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from prunekit.data.windows import TokenWindows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.evaluation.perplexity import perplexity
from prunekit.methods.depth import DepthConfig
from prunekit.methods.plan import PrunePlan
from prunekit.methods.run_directory import RunDirectory
from prunekit.methods.shortgpt import lowest_scoring
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.surgery import remove_blocks
from prunekit.options import option
from prunekit.recovery import RecoveryConfig, RecoveryDiverged, recover
from prunekit.recovery.checkpoints import Checkpointing, has_checkpoint
from prunekit.scoring.blocks import check_metric, scan_blocks

log = logging.getLogger(__name__)
# Defaults from the equal-budget screening (issue 15; README, "IteRABRe at an equal budget"): BI in the loop
# beat removal-cosine, and spending the whole budget once after the last removal beat a recovery after
# every removal. The paper's loop is metric removal-cosine with final_share 0.
DEFAULT_METRIC = "bi"
DEFAULT_FINAL_SHARE = 1.0
# Settings a resumed run may change without breaking what was already done.
RESUMABLE_CHANGES = ("learning_rate", "progress", "precision")
SCHEDULES = ("restart", "continuous")


@dataclass
class IterabreSettings:
    """What the loop does; `recovery.tokens` is the total budget, split evenly over the iterations."""

    remove: int
    per_step: int = 1
    metric: str = DEFAULT_METRIC
    protect: tuple[int, ...] = ()
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    schedule: str = "restart"  # restart: warm-up + cosine per iteration; continuous: one schedule over the whole run
    final_share: float = DEFAULT_FINAL_SHARE  # share of the budget for one recovery of every block after the last removal (1: only then)

    @property
    def iterations(self) -> int:
        return math.ceil(self.remove / self.per_step)

    @property
    def final_tokens(self) -> int:
        return round(self.recovery.tokens * self.final_share)

    def schedule_window(self, iteration: int) -> dict:
        """With the continuous schedule, where this iteration's steps sit in the whole run (iteration
        iterations + 1 is the final pass)."""
        if self.schedule != "continuous":
            return {}
        budgets = [self.tokens_for(i) for i in range(1, self.iterations + 1)] + ([self.final_tokens] if self.final_tokens else [])
        steps = [replace(self.recovery, tokens=t).steps() if t else 0 for t in budgets]
        return {"schedule_start": sum(steps[: iteration - 1]), "schedule_steps": sum(steps)}

    def check(self, num_blocks: int) -> None:
        check_metric(self.metric)
        if self.per_step < 1:
            raise ParameterError("per_step", f"{self.per_step} must be at least 1")
        if not 1 <= self.remove < num_blocks:
            raise PrunekitError(f"cannot remove {self.remove} of {num_blocks} blocks; remove between 1 and {num_blocks - 1}")
        bad = [i for i in self.protect if not 0 <= i < num_blocks]
        if bad:
            raise ParameterError("protect", f"{bad} is outside the model's blocks 0..{num_blocks - 1}")
        if num_blocks - len(set(self.protect)) < self.remove:
            raise PrunekitError(f"only {num_blocks - len(set(self.protect))} blocks are unprotected; cannot remove {self.remove}")
        if self.schedule not in SCHEDULES:
            raise ParameterError("schedule", f"'{self.schedule}' is unknown; use one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.final_share <= 1.0:
            raise ParameterError("final_share", f"{self.final_share} must be in [0, 1]")

    def tokens_for(self, iteration: int) -> int:
        """Iteration `iteration` (1-based) gets an equal share of what the final pass leaves; the
        remainder goes to the last ones."""
        base, extra = divmod(self.recovery.tokens - self.final_tokens, self.iterations)
        return base + (1 if iteration > self.iterations - extra else 0)

    def to_dict(self) -> dict:
        return {
            "remove": self.remove,
            "per_step": self.per_step,
            "metric": self.metric,
            "protect": list(self.protect),
            "schedule": self.schedule,
            "final_share": self.final_share,
            **{k: v for k, v in self.recovery.to_dict().items()},
        }


def _windows_slice(windows: TokenWindows, start: int, count: int) -> TokenWindows:
    rows = torch.arange(start, start + count) % windows.num_windows
    return TokenWindows(windows.input_ids[rows], windows.description, windows.total_tokens_available)


def _recovery_checkpoints(directory: RunDirectory, iteration: int) -> Checkpointing:
    """Each iteration's recovery saves itself beside the iteration checkpoints; an interrupted one continues."""
    path = directory.path / f"recovery-{iteration:03d}"
    return Checkpointing(path, resume=has_checkpoint(path), overwrite=True)


def iterabre(
    model,
    teacher,
    calibration: TokenWindows,
    recovery_data: TokenWindows | Callable[[], TokenWindows],
    settings: IterabreSettings,
    *,
    run_dir: str,
    heldout: TokenWindows | None = None,
    resume: bool = False,
    overwrite_run: bool = False,
    run_info: dict | None = None,
    device=None,
    offload: bool = False,
    batch_size: int = 1,
    progress: bool = True,
    on_iteration: Callable[[dict], None] | None = None,
) -> PrunePlan:
    """Prune `model` in place by IteRABRe and return the plan with one step per iteration.

    `teacher` is the dense model (unchanged). `run_dir` receives the state log and the checkpoint
    of the last finished iteration; with `resume=True` the run continues from there.
    `recovery_data` may be a function that makes the windows (e.g. sampling from the teacher); it
    is called once and its windows are cached in the run directory, so a resumed run reuses them.
    `on_iteration(entry)` is called after each checkpoint (progress reports, or tests that interrupt).
    """
    num_blocks = ModelAdapter(model).num_blocks
    settings.check(num_blocks)
    settings.recovery.check(teacher is not None)
    # one learning rate for every iteration, chosen by the dense model's size (the student shrinks)
    settings = replace(settings, recovery=settings.recovery.resolved(parameter_count(teacher if teacher is not None else model)))
    directory = RunDirectory(run_dir)
    run_settings = {
        **settings.to_dict(),
        **(run_info or {}),
        "num_blocks_before": num_blocks,
        "calibration": calibration.summary(origin=False),
    }
    if resume:
        state = directory.load(run_settings, may_differ=RESUMABLE_CHANGES)
        for entry in state["iterations"]:
            if entry["removed_current"]:  # the final recovery removed nothing
                remove_blocks(model, entry["removed_current"])
        if state["checkpoint"]:
            directory.load_weights(state, model)
        log.info("resuming %s after iteration %d", directory.path, len(state["iterations"]))
    else:
        state = directory.start(run_settings, overwrite=overwrite_run)
    state = directory.update(state, settings=run_settings, status="running")
    recovery_data = _cached_recovery_data(directory, recovery_data)
    original = list(range(num_blocks))
    for entry in state["iterations"]:
        original = [b for b in original if b not in set(entry["removed"])]
    removed_total = sum(len(entry["removed"]) for entry in state["iterations"])
    windows_used = sum(math.ceil(entry["recovery"]["tokens_budget"] / recovery_data.seq_len) for entry in state["iterations"])
    started_all = time.perf_counter()
    engine = {"device": device, "offload": offload, "batch_size": batch_size, "progress": progress}
    while removed_total < settings.remove:
        iteration = len(state["iterations"]) + 1
        started = time.perf_counter()
        count = min(settings.per_step, settings.remove - removed_total)
        scores = scan_blocks(model, calibration, settings.metric, **engine)
        protect_now = tuple(p for p, block in enumerate(original) if block in set(settings.protect))
        chosen = lowest_scoring(scores.scores, count, protect_now)
        removed = [original[p] for p in chosen]
        scan_seconds = time.perf_counter() - started
        remove_blocks(model, chosen)
        neighbours = blocks_next_to(chosen, len(original) - count)
        heldout_removed = perplexity(model, heldout, device=device, progress=False).perplexity if heldout is not None else None
        tokens = settings.tokens_for(iteration)
        share = math.ceil(tokens / recovery_data.seq_len)
        config = replace(settings.recovery, tokens=tokens, seed=settings.recovery.seed + iteration, **settings.schedule_window(iteration))
        try:
            # final_share 1: the iterations only re-score and remove; the whole budget goes to the final pass
            result = (
                None
                if tokens == 0
                else recover(
                    model,
                    _windows_slice(recovery_data, windows_used, share),
                    config,
                    teacher=teacher,
                    blocks=neighbours,
                    device=device,
                    progress=progress,
                    checkpoints=_recovery_checkpoints(directory, iteration),
                )
            )
        except RecoveryDiverged as error:
            failed = {"iteration": iteration, "removed": removed, "error": str(error), "learning_rate": error.learning_rate}
            directory.update(state, status="diverged", failure=failed)
            where = f"{directory.path / state['checkpoint']}" if state["checkpoint"] else "the input model (no iteration finished)"
            raise PrunekitError(
                f"iteration {iteration}: recovery diverged at step {error.step} (loss {error.loss}, "
                f"learning rate {error.learning_rate:.3g}); nothing was exported; the last good weights are "
                f"{where}; rerun with `resume` in `run_dir` {directory.path} and `learning_rate` {settings.recovery.learning_rate / 4:.3g}"
            ) from error
        windows_used += share
        heldout_recovered = (
            perplexity(model, heldout, device=device, progress=False).perplexity
            if heldout is not None and result is not None
            else heldout_removed
        )
        before, original = original, [b for p, b in enumerate(original) if p not in set(chosen)]
        removed_total += count
        entry = {
            "iteration": iteration,
            "removed": removed,
            "removed_current": chosen,
            "score": [scores.scores[p] for p in chosen],
            "scores": dict(zip(map(str, before), scores.scores)),
            "metric": settings.metric,
            "blocks_left": len(original),
            "loss_before_recovery": result.loss_first if result is not None else None,
            "loss_after_recovery": result.loss_last if result is not None else None,
            "heldout_perplexity_after_removal": heldout_removed,
            "heldout_perplexity_after_recovery": heldout_recovered,
            "recovery": _recovery_record(result, tokens, config) if result is not None else {"tokens_budget": 0, "tokens": 0, "steps": 0},
            "scan_seconds": scan_seconds,
            "seconds": time.perf_counter() - started,
        }
        if result is None and not state["checkpoint"]:  # nothing trained yet: the weights are the input's (no 16 GB write for 8B)
            state = directory.record_iteration(state, entry)
        else:
            state = directory.save_iteration(state, entry, model)
        log.info(
            "iteration %d: removed block %s (%s %.4g), held-out ppl %s -> %s",
            iteration,
            removed,
            settings.metric,
            entry["score"][0],
            heldout_removed,
            heldout_recovered,
        )
        if on_iteration is not None:
            on_iteration(entry)
    if settings.final_tokens and not any(entry.get("final") for entry in state["iterations"]):
        state = _final_recovery(model, teacher, recovery_data, settings, directory, state, windows_used, heldout, device, progress)
        if on_iteration is not None:
            on_iteration(state["iterations"][-1])
    state = directory.update(state, status="finished")
    steps = state["iterations"]
    removed_all = [b for entry in steps for b in entry["removed"]]
    first_scores = steps[0]["scores"]
    return PrunePlan(
        method="iterabre",
        removed_blocks=sorted(removed_all),
        num_blocks_before=num_blocks,
        reason=(
            f"iterative: {sum(not s.get('final') for s in steps)} iterations, each removing the {settings.per_step} block(s) "
            f"with the lowest {settings.metric} on the current model, then {settings.recovery.scope} recovery by distillation"
        ),
        metric=settings.metric,
        scores=[first_scores[str(i)] for i in range(num_blocks)],
        data=calibration.summary(),
        steps=steps,
        scan_seconds=time.perf_counter() - started_all,
    )


def _recovery_record(result, tokens: int, config: RecoveryConfig) -> dict:
    """What the run log keeps of one iteration's recovery."""
    return {
        "tokens_budget": tokens,
        "tokens": result.tokens,
        "steps": result.steps,
        "seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "trainable_parameters": result.trainable_parameters,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "epochs": result.epochs,
        "device": result.device,
        "micro_batch_size": result.micro_batch_size,
        "gradient_checkpointing": result.gradient_checkpointing,
        "mfu": result.mfu,
        "model_flops_per_token": result.model_flops_per_token,
        "peak_memory_mib": result.peak_memory_mib,
    }


def _final_recovery(model, teacher, recovery_data, settings, directory, state, windows_used, heldout, device, progress) -> dict:
    """One recovery of every remaining block on the budget's final share, after the last removal."""
    iteration = len(state["iterations"]) + 1
    started = time.perf_counter()
    tokens = settings.final_tokens
    share = math.ceil(tokens / recovery_data.seq_len)
    scope = "blocks" if settings.recovery.scope == "neighbours" else settings.recovery.scope
    config = replace(
        settings.recovery, tokens=tokens, scope=scope, seed=settings.recovery.seed + iteration, **settings.schedule_window(iteration)
    )
    try:
        result = recover(
            model,
            _windows_slice(recovery_data, windows_used, share),
            config,
            teacher=teacher,
            device=device,
            progress=progress,
            checkpoints=_recovery_checkpoints(directory, iteration),
        )
    except RecoveryDiverged as error:
        directory.update(state, status="diverged", failure={"iteration": iteration, "final": True, "error": str(error)})
        raise PrunekitError(
            f"the final recovery diverged at step {error.step} (loss {error.loss}); nothing was exported; the last "
            f"good weights are {directory.path / state['checkpoint']}; rerun with `resume` and a lower "
            "`learning_rate`"
        ) from error
    entry = {
        "iteration": iteration,
        "final": True,
        "removed": [],
        "removed_current": [],
        "blocks_left": ModelAdapter(model).num_blocks,
        "loss_before_recovery": result.loss_first,
        "loss_after_recovery": result.loss_last,
        "heldout_perplexity_after_recovery": perplexity(model, heldout, device=device, progress=False).perplexity
        if heldout is not None
        else None,
        "recovery": {**_recovery_record(result, tokens, config), "scope": scope},
        "seconds": time.perf_counter() - started,
    }
    return directory.save_iteration(state, entry, model)


def _cached_recovery_data(directory: RunDirectory, recovery_data) -> TokenWindows:
    cached = directory.load_recovery_data()
    if cached is not None:
        ids, description = cached
        return TokenWindows(ids, description, ids.numel())
    windows = recovery_data() if callable(recovery_data) else recovery_data
    directory.save_recovery_data(windows.input_ids, windows.description)
    return windows


def blocks_next_to(removed_positions: list[int], blocks_left: int) -> list[int]:
    """Indices, in the pruned model, of the blocks just before and just after each removed one."""
    near = set()
    for shift, position in enumerate(sorted(removed_positions)):
        new = position - shift  # where the block after the removed one now sits
        near.update(i for i in (new - 1, new) if 0 <= i < blocks_left)
    return sorted(near)


def dense_teacher(model):
    """A frozen copy of the unpruned model to distil from."""
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


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
