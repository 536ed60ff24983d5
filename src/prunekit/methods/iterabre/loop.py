"""IteRABRe (Wibowo et al., 2025): remove blocks one step at a time, recovering after each removal.

Each iteration scores every remaining block on the *current* (already pruned and recovered) model,
removes the least important one (or `per_step` of them), then distils the dense teacher into the
pruned model on its share of the recovery token budget. Every finished iteration is checkpointed
in a run directory, and each recovery checkpoints itself, so an interrupted run resumes from where it
stopped (the block being recovered from is recorded before its recovery starts, so it is not chosen
again) and, with the same seed, ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from prunekit.data.windows import TokenWindows
from prunekit.errors import ComputationError, PrunekitError
from prunekit.evaluation.perplexity import perplexity
from prunekit.methods.depth.removal import lowest_scoring
from prunekit.methods.iterabre.config import IterabreConfig
from prunekit.methods.iterabre.run_directory import RunDirectory
from prunekit.methods.plan import PrunePlan
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.surgery import remove_blocks
from prunekit.recovery import RecoveryConfig, RecoveryDiverged, recover
from prunekit.recovery.checkpoints import Checkpointing, has_checkpoint, saved_run_settings
from prunekit.scoring.blocks import scan_blocks

log = logging.getLogger(__name__)
# Settings a resumed run may change without breaking what was already done.
RESUMABLE_CHANGES = ("learning_rate", "progress", "precision")
RECOVERY_RESUMABLE = ("learning_rate", "precision")  # of those, the ones a half-done recovery cannot continue under


@dataclass(frozen=True)
class LoopSettings:
    """An IterabreConfig resolved for one model: how many blocks go, which never do, and the learning rate.

    `recovery.tokens` is the total budget: `final_share` of it for the pass after the last removal, the rest
    split evenly over the iterations.
    """

    remove: int
    per_step: int
    metric: str
    protect: tuple[int, ...]
    recovery: RecoveryConfig
    schedule: str
    final_share: float

    @classmethod
    def of(cls, config: IterabreConfig, num_blocks: int, dense_parameters: int) -> LoopSettings:
        config.check()
        remove, protect = config.count(num_blocks), config.protected(num_blocks)
        if num_blocks - len(protect) < remove:
            raise PrunekitError(f"only {num_blocks - len(protect)} blocks are unprotected; cannot remove {remove}")
        # one learning rate for every iteration, chosen by the dense model's size (the student shrinks)
        recovery = config.recovery.resolved(dense_parameters)
        return cls(remove, config.per_step, config.metric, protect, recovery, config.schedule, config.final_share)

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


def _recovery_checkpoints(directory: RunDirectory, iteration: int, config: RecoveryConfig) -> Checkpointing:
    """Each iteration's recovery saves itself beside the iteration checkpoints; an interrupted one continues,
    unless the run resumed with another learning rate or precision (after a divergence, say): then it starts over."""
    path = directory.path / f"recovery-{iteration:03d}"
    resume = has_checkpoint(path)
    if resume:
        saved = saved_run_settings(path)
        changed = [f"{k} {saved.get(k)} -> {getattr(config, k)}" for k in RECOVERY_RESUMABLE if saved.get(k) != getattr(config, k)]
        if changed:
            log.warning("iteration %d: its recovery starts over (%s); its saved steps are dropped", iteration, "; ".join(changed))
            resume = False
    return Checkpointing(path, resume=resume, overwrite=True)


def iterabre(
    model,
    teacher,
    calibration: TokenWindows,
    recovery_data: TokenWindows | Callable[[], TokenWindows],
    config: IterabreConfig,
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
    config.recovery.check(teacher is not None)
    settings = LoopSettings.of(config, num_blocks, parameter_count(teacher if teacher is not None else model))
    run_settings = {
        **settings.to_dict(),
        **(run_info or {}),
        "num_blocks_before": num_blocks,
        "calibration": calibration.summary(origin=False),
    }
    directory = RunDirectory(run_dir)
    state = _open_run(directory, model, run_settings, resume, overwrite_run)
    recovery_data = _cached_recovery_data(directory, recovery_data)
    progress_so_far = _Progress.of(state, num_blocks, recovery_data.seq_len)
    engine = {"device": device, "offload": offload, "batch_size": batch_size, "progress": progress}
    while progress_so_far.removed < settings.remove:
        entry = _iteration(model, teacher, calibration, recovery_data, settings, directory, state, progress_so_far, heldout, engine)
        if entry["loss_after_recovery"] is None and not state["checkpoint"]:  # nothing trained yet: the weights are the input's
            state = directory.record_iteration(state, entry)  # (no 16 GB write for 8B)
        else:
            state = directory.save_iteration(state, entry, model)
        if on_iteration is not None:
            on_iteration(entry)
    if settings.final_tokens and not any(entry.get("final") for entry in state["iterations"]):
        state = _final_recovery(model, teacher, recovery_data, settings, directory, state, progress_so_far, heldout, device, progress)
        if on_iteration is not None:
            on_iteration(state["iterations"][-1])
    state = directory.update(state, status="finished")
    return _plan(state["iterations"], settings, num_blocks, calibration, progress_so_far.earlier_seconds)


def _open_run(directory: RunDirectory, model, run_settings: dict, resume: bool, overwrite: bool) -> dict:
    """A new run's state, or a resumed one's with the model brought to its last finished iteration."""
    if resume:
        state = directory.load(run_settings, may_differ=RESUMABLE_CHANGES)
        for entry in state["iterations"]:
            if entry["removed_current"]:  # the final recovery removed nothing
                remove_blocks(model, entry["removed_current"])
        if state["checkpoint"]:
            directory.load_weights(state, model)
        log.info("resuming %s after iteration %d", directory.path, len(state["iterations"]))
    else:
        state = directory.start(run_settings, overwrite=overwrite)
    return directory.update(state, settings=run_settings, status="running")


@dataclass
class _Progress:
    """Where a run stands: the original indices of the blocks left, how many were removed, recovery windows used,
    and the seconds processes before this one spent on it (so a resumed run's time is its whole)."""

    original: list[int]
    removed: int
    windows_used: int
    earlier_seconds: float = 0.0

    @classmethod
    def of(cls, state: dict, num_blocks: int, seq_len: int) -> _Progress:
        gone = {b for entry in state["iterations"] for b in entry["removed"]}
        return cls(
            [b for b in range(num_blocks) if b not in gone],
            sum(len(entry["removed"]) for entry in state["iterations"]),
            sum(math.ceil(entry["recovery"]["tokens_budget"] / seq_len) for entry in state["iterations"]),
            sum(entry["seconds"] for entry in state["iterations"]),
        )


def _iteration(model, teacher, calibration, recovery_data, settings, directory, state, at: _Progress, heldout, engine) -> dict:
    """Score the current model, remove the lowest-scoring block(s), recover their neighbours; returns the log entry."""
    device = engine["device"]
    iteration = len(state["iterations"]) + 1
    started = time.perf_counter()
    count = min(settings.per_step, settings.remove - at.removed)
    tokens = settings.tokens_for(iteration)
    choice = state.get("pending")
    chosen_before = choice is not None and choice["iteration"] == iteration  # by a process stopped inside its recovery
    if not chosen_before:
        choice = _choose(model, calibration, settings, at, count, engine, iteration)
        if tokens:  # a resume inside the recovery must train the model it was training, whatever a new scan would say
            state = directory.update(state, pending=choice)
    chosen, removed = choice["removed_current"], [at.original[p] for p in choice["removed_current"]]
    remove_blocks(model, chosen)
    heldout_removed = perplexity(model, heldout, device=device, progress=False).perplexity if heldout is not None else None
    share = math.ceil(tokens / recovery_data.seq_len)
    config = replace(settings.recovery, tokens=tokens, seed=settings.recovery.seed + iteration, **settings.schedule_window(iteration))
    neighbours = blocks_next_to(chosen, len(at.original) - count)
    windows = _windows_slice(recovery_data, at.windows_used, share)
    # final_share 1: the iterations only re-score and remove; the whole budget goes to the final pass
    result = None
    if tokens:
        result = _recover_iteration(model, teacher, windows, config, neighbours, iteration, removed, directory, state, engine)
    at.windows_used += share
    # what processes stopped inside this iteration spent on it: the scan that chose its block, its recovery's saved steps
    earlier = (result.seconds_before_resume if result is not None else 0.0) + (choice["scan_seconds"] if chosen_before else 0.0)
    at.earlier_seconds += earlier
    heldout_recovered = heldout_removed
    if heldout is not None and result is not None:
        heldout_recovered = perplexity(model, heldout, device=device, progress=False).perplexity
    before, at.original = at.original, [b for p, b in enumerate(at.original) if p not in set(chosen)]
    at.removed += count
    entry = {
        "iteration": iteration,
        "removed": removed,
        "removed_current": chosen,
        "score": [choice["scores"][p] for p in chosen],
        "scores": dict(zip(map(str, before), choice["scores"])),
        "metric": settings.metric,
        "blocks_left": len(at.original),
        "loss_before_recovery": result.loss_first if result is not None else None,
        "loss_after_recovery": result.loss_last if result is not None else None,
        "heldout_perplexity_after_removal": heldout_removed,
        "heldout_perplexity_after_recovery": heldout_recovered,
        "recovery": _recovery_record(result, tokens, config) if result is not None else {"tokens_budget": 0, "tokens": 0, "steps": 0},
        "scan_seconds": choice["scan_seconds"],
        "seconds": time.perf_counter() - started + earlier,
    }
    log.info(
        "iteration %d: removed block %s (%s %.4g), held-out ppl %s -> %s",
        iteration,
        removed,
        settings.metric,
        entry["score"][0],
        heldout_removed,
        heldout_recovered,
    )
    return entry


def _choose(model, calibration, settings: LoopSettings, at: _Progress, count: int, engine: dict, iteration: int) -> dict:
    """Score every remaining block on the current model and pick the `count` lowest (protected ones never)."""
    started = time.perf_counter()
    scores = scan_blocks(model, calibration, settings.metric, **engine).scores
    protect_now = tuple(p for p, block in enumerate(at.original) if block in set(settings.protect))
    chosen = lowest_scoring(scores, count, protect_now)
    return {"iteration": iteration, "removed_current": chosen, "scores": scores, "scan_seconds": time.perf_counter() - started}


def _recover_iteration(model, teacher, windows, config, neighbours, iteration, removed, directory, state, engine):
    """One iteration's recovery; a divergence is recorded in the run and reported with what to do next."""
    try:
        return recover(
            model,
            windows,
            config,
            teacher=teacher,
            blocks=neighbours,
            device=engine["device"],
            progress=engine["progress"],
            checkpoints=_recovery_checkpoints(directory, iteration, config),
        )
    except RecoveryDiverged as error:
        failed = {"iteration": iteration, "removed": removed, "error": str(error), "learning_rate": error.learning_rate}
        directory.update(state, status="diverged", failure=failed)
        where = f"{directory.path / state['checkpoint']}" if state["checkpoint"] else "the input model (no iteration finished)"
        raise ComputationError(
            f"iteration {iteration}: recovery diverged at step {error.step} (loss {error.loss}, "
            f"learning rate {error.learning_rate:.3g}); nothing was exported; the last good weights are "
            f"{where}; rerun with `resume` in `run_dir` {directory.path} and `learning_rate` {config.learning_rate / 4:.3g}"
        ) from error


def _plan(steps: list[dict], settings: LoopSettings, num_blocks: int, calibration: TokenWindows, earlier_seconds: float) -> PrunePlan:
    """The run as a plan; its time is the iterations' own, so a resumed run counts the processes before it too
    (`earlier_seconds` of it)."""
    first_scores = steps[0]["scores"]
    return PrunePlan(
        method="iterabre",
        removed_blocks=sorted(b for entry in steps for b in entry["removed"]),
        num_blocks_before=num_blocks,
        reason=(
            f"iterative: {sum(not s.get('final') for s in steps)} iterations, each removing the {settings.per_step} block(s) "
            f"with the lowest {settings.metric} on the current model, then {settings.recovery.scope} recovery by distillation"
        ),
        metric=settings.metric,
        scores=[first_scores[str(i)] for i in range(num_blocks)],
        data=calibration.summary(),
        steps=steps,
        scan_seconds=sum(entry["seconds"] for entry in steps),
        seconds_before_resume=earlier_seconds,
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


def _final_recovery(model, teacher, recovery_data, settings, directory, state, at: _Progress, heldout, device, progress) -> dict:
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
            _windows_slice(recovery_data, at.windows_used, share),
            config,
            teacher=teacher,
            device=device,
            progress=progress,
            checkpoints=_recovery_checkpoints(directory, iteration, config),
        )
    except RecoveryDiverged as error:
        directory.update(state, status="diverged", failure={"iteration": iteration, "final": True, "error": str(error)})
        raise ComputationError(
            f"the final recovery diverged at step {error.step} (loss {error.loss}); nothing was exported; the last "
            f"good weights are {directory.path / state['checkpoint']}; rerun with `resume` and a lower "
            "`learning_rate`"
        ) from error
    at.earlier_seconds += result.seconds_before_resume
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
        "seconds": time.perf_counter() - started + result.seconds_before_resume,
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
