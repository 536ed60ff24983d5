"""The recovery trainer shared by every method: distil the dense teacher into the pruned student.

Built on accelerate, so one code path runs on CPU, one GPU, or several (`accelerate launch`, which
shards the windows over processes and synchronises gradients). The budget is a number of tokens;
AdamW with linear warm-up and cosine decay; gradient accumulation; optional gradient checkpointing.
A non-finite loss or gradient stops training, restores the weights from before the run and raises
`RecoveryDiverged` with the step and learning rate, so a broken model is never returned.

Student and teacher train on one device: the one asked for, else the student's (`training_device`).
On a GPU each step's windows are regrouped into the largest micro-batches that fit its memory
(the optimizer sees the same windows per step), AdamW is the fused kernel, and the result reports
tokens/s and model-flops utilisation (`throughput.py`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prunekit.data.windows import TokenWindows
from prunekit.errors import ComputationError, PrunekitError
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.loading import resolve_device
from prunekit.recovery.checkpoints import Checkpointing, RecoveryInterrupted, RunCheckpoints, StopSignals, model_fingerprint
from prunekit.recovery.config import RecoveryConfig
from prunekit.recovery.distributed import launch_state
from prunekit.recovery.memory import MemoryEstimate, activation_bytes, check_fits, estimate_memory, measured_peak, training_state_bytes
from prunekit.recovery.sharding import ShardedModel, ShardedTrainingState, check_can_shard, clip_gradients, shard, sharding_from_launch
from prunekit.recovery.throughput import distillation_flops_per_token, peak_flops, utilisation
from prunekit.recovery.window_stream import WindowOrder

log = logging.getLogger(__name__)


class RecoveryDiverged(ComputationError):
    """The loss or the gradient became NaN/inf; the student holds its weights from before the run."""

    def __init__(self, step: int, learning_rate: float, loss: float):
        self.step, self.learning_rate, self.loss = step, learning_rate, loss
        super().__init__(
            f"recovery diverged at step {step} (loss {loss}, learning rate {learning_rate:.3g}); "
            "the weights from before recovery were restored; retry with a lower `learning_rate` or `precision` fp32"
        )


@dataclass
class RecoveryResult:
    steps: int
    tokens: int
    seconds: float  # training time; a resumed run adds the processes before it (up to their last checkpoint)
    tokens_per_second: float  # this process's steps over this process's time
    loss_first: float  # mean objective over the first optimizer step (before any update)
    loss_last: float  # mean objective over the last optimizer step
    trainable_parameters: int
    data: str
    epochs: float | None  # how often the data was seen (over 1: repeated; None: less than one pass of a stream)
    config: dict
    history: list[dict] = field(default_factory=list)  # one entry per optimizer step
    device: str = "cpu"
    micro_batch_size: int = 1  # as run (regrouped to fit the accelerator unless fit_micro_batch is off)
    grad_accumulation: int = 1
    gradient_checkpointing: bool = False
    model_flops_per_token: float = 0.0  # 6 N_student + 2 N_teacher
    mfu: float | None = None  # model-flops utilisation of the device's bf16 peak (GPUs we know)
    peak_memory_mib: float | None = None  # CUDA peak allocation during the run
    memory: dict = field(default_factory=dict)  # the estimate per process made before training, and the measured peak
    resumed_from_step: int = 0  # steps done by an earlier process (0: the run started here)
    seconds_before_resume: float = 0.0  # the earlier processes' share of `seconds`, so callers timing this process can add it

    def to_dict(self) -> dict:
        return asdict(self)


def dense_teacher(model):
    """A frozen copy of the unpruned model to distil from (made before pruning changes the model)."""
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _mixed_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def training_device(student, device: str | torch.device | None = None) -> torch.device:
    """Where student and teacher train: the device asked for; under a multi-process launch, this
    process's device; otherwise the student's own (a model loaded on the CPU trains on the CPU even
    on a machine with a GPU, and comes back where it was)."""
    if device is not None:
        return resolve_device(str(device))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by accelerate launch / torchrun
        return launch_state().device
    return next(student.parameters()).device


def make_accelerator(precision: str = "auto", device: str | torch.device | None = None):
    """An `Accelerator` for this run on `device` (default: accelerate's choice). accelerate keeps one
    state per process, so a single process that switches device or precision between runs (a CPU
    run, then a GPU one, in one notebook) gets a fresh state; a multi-process launch cannot switch."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    wanted = torch.device(device) if device is not None else None
    if wanted is not None and wanted.type == "cuda" and wanted.index is not None:
        torch.cuda.set_device(wanted)  # accelerate's single-process device is the current one
    cpu = wanted is not None and wanted.type == "cpu"
    mixed = _mixed_precision(precision, wanted if wanted is not None else launch_state().device)
    accelerator = None
    # An FSDP launch config is honoured by the trainer's own sharding (sharding.py), so accelerate must not wrap too.
    fsdp_flag = os.environ.pop("ACCELERATE_USE_FSDP", None)
    try:
        try:
            accelerator = Accelerator(mixed_precision=mixed, cpu=cpu)
        except ValueError:
            if launch_state().num_processes > 1:
                raise
        if accelerator is None or (wanted is not None and accelerator.device.type != wanted.type):
            if launch_state().num_processes > 1:
                raise PrunekitError(f"this launch runs on {accelerator.device}; it cannot train on {wanted}")
            AcceleratorState._reset_state(reset_partial_state=True)
            accelerator = Accelerator(mixed_precision=mixed, cpu=cpu)
    finally:
        if fsdp_flag is not None:
            os.environ["ACCELERATE_USE_FSDP"] = fsdp_flag
    return accelerator


def _select_trainable(model, config: RecoveryConfig, blocks: list[int] | None):
    """Freeze everything, then unfreeze the scope; LoRA wraps the model with peft. Returns the model to train."""
    if config.scope == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)
    for param in model.parameters():
        param.requires_grad_(config.scope == "full")
    owned = [m for m in model.modules() if getattr(m, "recovery_scope", None) == config.scope]  # modules that name their scope
    if config.scope == "adapters" and not owned:
        raise PrunekitError(
            "recovery scope 'adapters' needs modules with their own adapters (FlexiGPT's shared blocks); this model has none"
        )
    for module in owned:
        for param in module.parameters(recurse=False):
            param.requires_grad_(True)
    if config.scope in ("blocks", "neighbours"):
        layers = ModelAdapter(model).layers
        chosen = range(len(layers)) if config.scope == "blocks" else blocks
        if not chosen:
            raise PrunekitError("recovery scope 'neighbours' needs the blocks to train (next to the removed ones)")
        for index in chosen:
            if not 0 <= index < len(layers):
                raise PrunekitError(f"block {index} to train does not exist (the model has {len(layers)} blocks)")
            for param in layers[index].parameters():
                param.requires_grad_(True)
    return model


def _parameter_groups(model, trainable: list, config: RecoveryConfig) -> list[dict]:
    """One group at the peak learning rate, plus one for the parameters of modules that name a setting for their own
    rate (`learning_rate_option`, e.g. FlexiGPT's output-norm scales: `norm_scale_learning_rate`) where it is set;
    the schedule scales every group alike."""
    rates: dict[int, float] = {}
    for module in model.modules():
        rate = getattr(config, getattr(module, "learning_rate_option", "") or "", None)
        if rate is not None:
            rates.update((id(p), rate) for p in module.parameters(recurse=False))
    groups = [{"params": [p for p in trainable if id(p) not in rates]}]
    for rate in dict.fromkeys(rates.values()):
        own = [p for p in trainable if rates.get(id(p)) == rate]
        groups += [{"params": own, "lr": rate}] if own else []
    return groups


def _vocabulary(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head.weight.shape[0] if head is not None else model.config.vocab_size


def shared_vocabulary(student, teacher, windows: TokenWindows | None = None) -> int:
    """How many leading token ids student and teacher logits are compared on.

    Checkpoints often pad the vocabulary to a multiple of 64 or 128 (49216 rows for a 49152-token
    tokenizer): the padded rows are never a token, so the distillation compares the shared ids.
    Vocabularies that differ by more than that padding belong to different tokenizers: refused."""
    sizes = {_vocabulary(student)} | ({_vocabulary(teacher)} if teacher is not None else set())
    shared, larger = min(sizes), max(sizes)
    if larger != shared and not (larger % 64 == 0 and larger - shared < 128):
        raise PrunekitError(
            f"the teacher's vocabulary has {_vocabulary(teacher)} entries and the student's {_vocabulary(student)}: "
            "more than padding apart, so they do not share a tokenizer; distil from a teacher with the student's tokenizer"
        )
    if windows is not None:
        check_token_ids(windows.input_ids, shared, teacher is not None and _vocabulary(teacher) == shared)
    return shared


def check_token_ids(input_ids: torch.Tensor, shared: int, teacher_is_smaller: bool = False) -> None:
    """Refuse ids the models do not know (data tokenized with another tokenizer)."""
    top = int(input_ids.max()) if input_ids.numel() else -1
    if top >= shared:
        raise PrunekitError(
            f"the recovery data holds token id {top}, but the {'teacher' if teacher_is_smaller else 'student'} "
            f"knows only {shared} tokens; tokenize the data with the models' own tokenizer"
        )


def _objective(student_out, teacher_out, input_ids, config: RecoveryConfig, vocabulary: int | None = None) -> tuple[torch.Tensor, dict]:
    """Weighted sum of KD (KL on tempered logits over the shared `vocabulary`), LM cross-entropy and final-hidden MSE."""
    logits = student_out.logits.float()
    parts: dict[str, torch.Tensor] = {}
    if config.kd_weight:
        t = config.temperature
        student_log = F.log_softmax(logits[..., :vocabulary] / t, dim=-1)
        teacher_log = F.log_softmax(teacher_out.logits[..., :vocabulary].float() / t, dim=-1)
        kl = F.kl_div(student_log.flatten(0, 1), teacher_log.flatten(0, 1), log_target=True, reduction="batchmean")
        parts["kd"] = kl * t * t
    if config.lm_weight:
        parts["lm"] = F.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())
    if config.hidden_weight:
        student_h, teacher_h = student_out.hidden_states[-1].float(), teacher_out.hidden_states[-1].float()
        parts["hidden"] = F.mse_loss(student_h, teacher_h) / teacher_h.pow(2).mean().clamp_min(1e-12)
    weights = {"kd": config.kd_weight, "lm": config.lm_weight, "hidden": config.hidden_weight}
    total = sum(weights[name] * value for name, value in parts.items())
    return total, {name: value.item() for name, value in parts.items()}


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().to("cpu", copy=True) for name, param in model.named_parameters() if param.requires_grad}


@torch.no_grad()
def _restore(model, snapshot: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, value in snapshot.items():
        params[name].copy_(value.to(params[name].device))


def _release_gradients(parameters) -> None:
    for param in parameters:
        param.grad = None


def choose_micro_batch(per_step: int, peak_bytes, capacity: int, optimizer_bytes: int, checkpointing: bool = False) -> tuple[int, bool]:
    """(micro-batch, gradient checkpointing): the largest divisor of the windows per step whose
    measured peak (`peak_bytes(micro, checkpointing)`, None when it ran out of memory) leaves room
    for AdamW's two moments in 90% of `capacity`; without activation checkpointing first (it costs a
    third more compute), with it only when not even one window fits otherwise."""
    for use_checkpointing in [True] if checkpointing else [False, True]:
        for micro in [d for d in range(per_step, 0, -1) if per_step % d == 0]:
            peak = peak_bytes(micro, use_checkpointing)
            if peak is not None and peak + optimizer_bytes <= 0.9 * capacity:
                return micro, use_checkpointing
    raise PrunekitError(
        f"recovery does not fit in {capacity / 2**30:.0f} GiB even one window at a time with gradient "
        "checkpointing; use `scope` lora, a shorter `seq_len`, or a larger GPU"
    )


def fit_micro_batch(
    prepared, teacher, sample: torch.Tensor, config: RecoveryConfig, accelerator, trainable, vocabulary: int | None = None
) -> tuple[int, bool]:
    """`choose_micro_batch` on this GPU, measuring each size with one forward and backward of student
    and teacher; the weights are not changed (no optimizer step, gradients dropped). Leaves the
    model with the chosen checkpointing."""
    device = accelerator.device
    model = accelerator.unwrap_model(prepared)
    want_hidden = config.hidden_weight > 0

    def peak_bytes(micro: int, checkpointing: bool) -> int | None:
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_disable()
        input_ids = sample[:micro].to(device)
        outputs = []
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            teacher_out = None
            if teacher is not None:
                with torch.no_grad(), accelerator.autocast():
                    teacher_out = teacher(input_ids=input_ids, output_hidden_states=want_hidden, use_cache=False)
            with accelerator.autocast():
                student_out = prepared(input_ids=input_ids, output_hidden_states=want_hidden, use_cache=False)
            outputs = [teacher_out, student_out]
            loss, _ = _objective(student_out, teacher_out, input_ids, config, vocabulary)
            accelerator.backward(loss)
            return torch.cuda.max_memory_allocated(device)
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            outputs.clear()
            _release_gradients(trainable)
            torch.cuda.empty_cache()

    per_step = config.micro_batch_size * config.grad_accumulation
    capacity = torch.cuda.get_device_properties(device).total_memory
    optimizer_bytes = 2 * sum(p.numel() * p.element_size() for p in trainable)
    micro, checkpointing = choose_micro_batch(per_step, peak_bytes, capacity, optimizer_bytes, config.gradient_checkpointing)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    return micro, checkpointing


def _schedule(optimizer, config: RecoveryConfig, steps: int):
    """Linear warm-up then cosine decay over this run, or over the longer schedule it is a stretch of.

    The same factor as transformers' `get_cosine_schedule_with_warmup`, written here because importing
    that function loads transformers' trainer (and peft, scipy) into every command."""
    total, start = (steps, 0) if config.schedule_steps is None else (config.schedule_steps, config.schedule_start)
    warmup = int(config.warmup_ratio * total)

    def factor(step: int) -> float:
        at = step + start
        if at < warmup:
            return at / max(1, warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, (at - warmup) / max(1, total - warmup)))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def window_source(windows, seed: int):
    """The trainer's view of its data: TokenWindows are drawn in a seeded order, pass after pass; a stream as it is."""
    return WindowOrder(windows, seed) if isinstance(windows, TokenWindows) else windows


def _warn_about_budget(config: RecoveryConfig, source, per_step: int, processes: int, windows_needed: int) -> None:
    if config.tokens < config.tokens_per_step(processes):
        log.warning(
            "the budget of %d tokens is less than one optimizer step (%d windows of %d tokens): the step repeats "
            "windows; raise `tokens` or lower `grad_accumulation`",
            config.tokens,
            per_step * processes,
            config.seq_len,
        )
    elif source.num_windows is not None and windows_needed > source.num_windows:
        log.warning(
            "recovery data has %d windows but the budget needs %d: each window is seen %.1f times; pass more data for a larger `tokens`",
            source.num_windows,
            windows_needed,
            windows_needed / source.num_windows,
        )


def _run_settings(config: RecoveryConfig, source, student, processes: int, blocks) -> dict:
    """What decides a run's result: checked again when it resumes."""
    return {
        **config.to_dict(),
        "data": source.identity(),
        "model": model_fingerprint(student),
        "processes": processes,
        "blocks": list(blocks) if blocks else None,
    }


@dataclass
class _Run:
    """One run's prepared pieces, passed between the named steps of `recover`."""

    config: RecoveryConfig
    accelerator: object
    prepared: object
    model: object
    optimizer: object
    scheduler: object
    trainable: list
    source: object
    vocabulary: int
    steps: int
    per_step: int
    micro_batch: int = 1
    checkpointing: bool = False
    history: list = field(default_factory=list)
    first_step: int = 0
    earlier_seconds: float = 0.0  # training time of the processes before a resumed one, from its checkpoint
    started: float = 0.0  # when this process's first step began (time.perf_counter)
    checkpoints: RunCheckpoints | None = None
    memory: MemoryEstimate | None = None  # per process, made before training
    teacher: object = None  # the teacher the steps call: the caller's, or its sharded copy
    sharded: list[ShardedModel] = field(default_factory=list)  # student (and teacher) shards, gathered back at the end
    state_bytes: int | None = None  # measured after the first optimizer step

    @property
    def is_sharded(self) -> bool:
        return bool(self.sharded)


def _step(run: _Run, step: int, chunk: torch.Tensor, want_hidden: bool) -> dict:
    """One optimizer step on this step's windows (every process's share of `chunk`); returns its log entry."""
    accelerator, config, processes, rank = run.accelerator, run.config, run.accelerator.num_processes, run.accelerator.process_index
    accumulation = run.per_step // run.micro_batch
    teacher = run.teacher
    step_loss, parts_sum = 0.0, {}
    for micro in range(accumulation):
        index = micro * processes + rank
        input_ids = chunk[index * run.micro_batch : (index + 1) * run.micro_batch].to(accelerator.device)
        teacher_out = None
        if teacher is not None:
            with torch.no_grad(), accelerator.autocast():
                teacher_out = teacher(input_ids=input_ids, output_hidden_states=want_hidden, use_cache=False)
        with _gradient_sync(run, micro == accumulation - 1):
            with accelerator.autocast():
                student_out = run.prepared(input_ids=input_ids, output_hidden_states=want_hidden, use_cache=False)
            loss, parts = _objective(student_out, teacher_out, input_ids, config, run.vocabulary)
            if not torch.isfinite(loss):
                raise RecoveryDiverged(step + 1, run.scheduler.get_last_lr()[0], loss.item())
            accelerator.backward(loss / accumulation)
        step_loss += loss.item() / accumulation
        for name, value in parts.items():
            parts_sum[name] = parts_sum.get(name, 0.0) + value / accumulation
    norm = _clip(run) if config.max_grad_norm else None
    if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
        raise RecoveryDiverged(step + 1, run.scheduler.get_last_lr()[0], float("nan"))
    learning_rate = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    if run.state_bytes is None:  # weights, gradients and AdamW moments as this process holds them
        run.state_bytes = training_state_bytes(run.trainable, run.optimizer)
    # The schedule itself, once per optimizer step: accelerate's wrapper would step it once per process.
    getattr(run.scheduler, "scheduler", run.scheduler).step()
    run.optimizer.zero_grad(set_to_none=True)
    if processes > 1:  # the step's loss over every process's windows, as one process with the whole batch logs it
        names = sorted(parts_sum)
        mean = accelerator.reduce(torch.tensor([step_loss, *(parts_sum[n] for n in names)], device=accelerator.device), "mean").tolist()
        step_loss, parts_sum = mean[0], dict(zip(names, mean[1:]))
    return {"step": step + 1, "loss": step_loss, "lr": learning_rate, "grad_norm": float(norm) if norm is not None else None, **parts_sum}


def _gradient_sync(run: _Run, sync: bool):
    """Gradients are reduced across processes after a step's last micro-batch only (FSDP or DDP)."""
    if run.is_sharded:
        run.prepared.set_requires_gradient_sync(sync)
        return nullcontext()
    return nullcontext() if sync else run.accelerator.no_sync(run.prepared)


def _clip(run: _Run):
    if run.is_sharded:
        return clip_gradients(run.trainable, run.config.max_grad_norm)
    return run.accelerator.clip_grad_norm_(run.trainable, run.config.max_grad_norm)


def _next_chunk(run: _Run) -> torch.Tensor:
    chunk = run.source.take(run.per_step * run.accelerator.num_processes)
    check_token_ids(chunk, run.vocabulary)
    return chunk


def _train(run: _Run, progress: bool, first_chunk: torch.Tensor | None) -> None:
    """The step loop: saves where due, and on SIGINT/SIGTERM saves and raises RecoveryInterrupted."""
    want_hidden = run.config.hidden_weight > 0
    tokens_per_step = run.config.tokens_per_step(run.accelerator.num_processes)
    bar = tqdm(
        range(run.first_step, run.steps),
        desc=f"recovery steps of {tokens_per_step} tokens",
        initial=run.first_step,
        total=run.steps,
        disable=not (progress and run.accelerator.is_main_process),
        leave=False,
    )
    with StopSignals() if run.checkpoints is not None else nullcontext() as signals:
        for step in bar:
            chunk = first_chunk if step == run.first_step and first_chunk is not None else _next_chunk(run)
            run.history.append(_step(run, step, chunk, want_hidden))
            bar.set_postfix(loss=f"{run.history[-1]['loss']:.4f}")
            if run.checkpoints is None or step + 1 == run.steps:
                continue
            stop = signals.any_received(run.accelerator)
            if stop or run.checkpoints.due(step + 1, tokens_per_step, run.first_step):
                seconds = run.earlier_seconds + time.perf_counter() - run.started
                saved = run.checkpoints.save(step + 1, run.history, run.source, {"steps": run.steps, "seconds": seconds})
                if stop:
                    raise RecoveryInterrupted(saved, step + 1, run.steps, signals.received or "signal")


def _prepare(student, teacher, source, config: RecoveryConfig, blocks, accelerator, checkpointing: Checkpointing | None) -> _Run:
    """Trainable scope, optimizer, schedule and accelerate; a resumed run gets its saved state back."""
    target = accelerator.device
    processes = accelerator.num_processes
    steps = config.steps(processes)
    per_step = config.micro_batch_size * config.grad_accumulation  # windows per optimizer step and process
    _warn_about_budget(config, source, per_step, processes, steps * per_step * processes)
    vocabulary = shared_vocabulary(student, teacher)
    if config.sharding == "fsdp":
        check_can_shard()
    checkpoints = None
    if checkpointing is not None:
        defaults = RecoveryConfig().to_dict()
        checkpoints = RunCheckpoints(checkpointing, accelerator, _run_settings(config, source, student, processes, blocks), defaults)
    resume_from = checkpoints.open() if checkpoints is not None else None
    torch.manual_seed(config.seed)
    student.config.use_cache = False
    student.to(target)
    if teacher is not None:
        teacher.eval()
        teacher.to(target)
    model = _select_trainable(student, config, blocks)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PrunekitError("nothing to train: the recovery scope selected no parameters")
    memory = _memory_plan(student, teacher, model, trainable, config, accelerator)
    sharded = []
    if config.sharding == "fsdp":
        sharded.append(shard(model, target))
        if teacher is not None and config.shard_teacher:
            sharded.append(shard(teacher, target))
    if sharded:  # train the student's shards in its place
        model = sharded[0].sharded
        trainable = [p for p in model.parameters() if p.requires_grad]
    fused = target.type == "cuda" and all(p.is_floating_point() and p.device.type == "cuda" for p in trainable)
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, trainable, config), lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None
    )
    scheduler = _schedule(optimizer, config, steps)
    model.train()
    if sharded:  # accelerate would wrap the model again and save only the first process's optimizer shard
        prepared = model
        if checkpoints is not None:
            checkpoints.sharded_state = ShardedTrainingState(model, optimizer, scheduler)
    else:
        prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    run = _Run(config, accelerator, prepared, model, optimizer, scheduler, trainable, source, vocabulary, steps, per_step)
    run.micro_batch, run.checkpointing, run.checkpoints = config.micro_batch_size, config.gradient_checkpointing, checkpoints
    run.memory, run.sharded = memory, sharded
    run.teacher = sharded[1].sharded if len(sharded) > 1 else teacher
    if resume_from is not None:
        checkpoints.restore(resume_from, source)
        run.first_step, run.history = int(resume_from["step"]), list(resume_from["history"])
        run.earlier_seconds = float(resume_from.get("seconds", 0.0))  # checkpoints of older versions lack it
    return run


def _lora_parameters(model, rank: int) -> int:
    """Parameters rank-`rank` adapters on every linear layer of the blocks would train (for the memory advice)."""
    return sum(
        rank * (m.in_features + m.out_features) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layers" in name
    )


def _fits_micro_batch(config: RecoveryConfig, accelerator) -> bool:
    """Whether the micro-batch is fitted to the GPU's memory after a trial step (one GPU, one process)."""
    return config.fit_micro_batch and accelerator.device.type == "cuda" and accelerator.num_processes == 1


def _memory_plan(student, teacher, model, trainable: list, config: RecoveryConfig, accelerator) -> MemoryEstimate:
    """The run's memory per process, checked against the device before anything is trained. On one GPU the micro-batch
    is fitted afterwards (down to one window with checkpointing), so only that smallest setting must fit."""
    bf16 = accelerator.mixed_precision == "bf16"
    planned = estimate_memory(
        student,
        teacher,
        trainable,
        micro_batch=config.micro_batch_size,
        seq_len=config.seq_len,
        checkpointing=config.gradient_checkpointing,
        autocast_bf16=bf16,
        processes=accelerator.num_processes,
        sharded=config.sharding == "fsdp",
        teacher_sharded=config.shard_teacher,
    )

    def with_activations(micro_batch: int) -> MemoryEstimate:  # the same run with gradient checkpointing
        return replace(planned, activations=activation_bytes(student.config, micro_batch, config.seq_len, True, bf16))

    check_fits(
        with_activations(1) if _fits_micro_batch(config, accelerator) else planned,
        accelerator.device,
        lora_trainable=_lora_parameters(model, config.lora_rank),
        checkpointed=None if config.gradient_checkpointing else with_activations(config.micro_batch_size),
        micro_batch=config.micro_batch_size,
    )
    return planned


def _fit_batches(run: _Run) -> torch.Tensor | None:
    """On one GPU, the largest micro-batches that fit (measured on the first step's windows, which it returns)."""
    if not _fits_micro_batch(run.config, run.accelerator):
        if run.checkpointing:
            run.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return None
    first = _next_chunk(run) if run.first_step < run.steps else None
    if first is not None:
        run.micro_batch, run.checkpointing = fit_micro_batch(
            run.prepared, run.teacher, first[: run.per_step], run.config, run.accelerator, run.trainable, run.vocabulary
        )
    return first


def recover(
    student,
    windows,
    config: RecoveryConfig | None = None,
    *,
    teacher=None,
    blocks: list[int] | None = None,
    device=None,
    progress: bool = True,
    accelerator=None,
    checkpoints: Checkpointing | None = None,
) -> RecoveryResult:
    """Train `student` in place on `windows` for `config.tokens` tokens; returns what happened.

    `windows`: TokenWindows held in memory, or a stream (`streamed_windows`) read as training goes.
    `teacher` (the dense model) is needed for the distillation losses and is never changed.
    `blocks` lists the block indices trained under scope 'neighbours'. A LoRA run is merged into
    the student's weights before returning, so the result is a plain model again. `checkpoints`:
    save the run every so often in a run directory, and continue a saved one (`resume`).
    """
    config = config or RecoveryConfig()
    config.check(teacher is not None)
    config = config.resolved(parameter_count(teacher if teacher is not None else student))
    if config.sharding == "none" and sharding_from_launch():
        config = replace(config, sharding="fsdp")
    if isinstance(windows, TokenWindows):
        shared_vocabulary(student, teacher, windows)
    source = window_source(windows, config.seed)
    if source.seq_len != config.seq_len:
        config = replace(config, seq_len=source.seq_len)
    accelerator = accelerator or make_accelerator(config.precision, training_device(student, device))
    target = accelerator.device
    was_training, use_cache = student.training, getattr(student.config, "use_cache", None)
    snapshot = None
    run = None
    diverged: RecoveryDiverged | None = None
    try:
        run = _prepare(student, teacher, source, config, blocks, accelerator, checkpoints)
        snapshot = _snapshot(run.model)
        first_chunk = _fit_batches(run)
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        run.started = time.perf_counter()
        _train(run, progress, first_chunk)
    except RecoveryDiverged as error:
        diverged = error
    finally:
        model = _teardown(run, student, snapshot, diverged, was_training, use_cache, accelerator)
    if diverged is not None:
        raise diverged
    if run.checkpoints is not None:
        run.checkpoints.finish()
    return _result(run, model, teacher, windows, target)


def _teardown(run: _Run | None, student, snapshot, diverged, was_training: bool, use_cache, accelerator):
    """Back to a plain model in its own precision: unwrap, restore on divergence, merge LoRA."""
    student.config.use_cache = use_cache
    if run is None:
        return student
    run.optimizer.zero_grad(set_to_none=True)
    if diverged is not None and snapshot is not None:
        _restore(run.model, snapshot)
    if run.is_sharded:  # the full weights back into the caller's student and teacher
        model = run.sharded[0].owner
        for sharded in run.sharded:
            sharded.gather()
        run.prepared = run.model = run.teacher = None
    else:
        # accelerate's prepare() patches the model's forward to run under autocast; without
        # keep_fp32_wrapper=False the returned model would go on computing in bf16 after training.
        model = accelerator.unwrap_model(run.prepared, keep_fp32_wrapper=False)
    if run.checkpointing:
        model.gradient_checkpointing_disable()
    if run.config.scope == "lora":
        model = model.unload() if diverged is not None else model.merge_and_unload()
    for param in model.parameters():
        param.requires_grad_(True)
    model.train(was_training)
    accelerator.free_memory()
    return model


def _result(run: _Run, model, teacher, windows, target) -> RecoveryResult:
    processes = run.accelerator.num_processes
    seconds = time.perf_counter() - run.started
    tokens = run.steps * run.config.tokens_per_step(processes)
    tokens_per_second = (run.steps - run.first_step) * run.config.tokens_per_step(processes) / seconds if seconds else 0.0
    flops_per_token = distillation_flops_per_token(model, teacher)
    peak = peak_flops(target, run.accelerator.mixed_precision)
    return RecoveryResult(
        steps=run.steps,
        tokens=tokens,
        seconds=run.earlier_seconds + seconds,
        seconds_before_resume=run.earlier_seconds,
        tokens_per_second=tokens_per_second,
        loss_first=run.history[0]["loss"],
        loss_last=run.history[-1]["loss"],
        trainable_parameters=sum(p.numel() for p in run.trainable),
        data=run.source.description,
        epochs=run.source.passes(),
        config=run.config.to_dict(),
        history=run.history,
        device=str(target),
        micro_batch_size=run.micro_batch,
        grad_accumulation=run.per_step // run.micro_batch,
        gradient_checkpointing=run.checkpointing,
        model_flops_per_token=flops_per_token,
        mfu=utilisation(tokens_per_second / processes, flops_per_token, peak),
        peak_memory_mib=torch.cuda.max_memory_allocated(target) / 2**20 if target.type == "cuda" else None,
        memory=_memory_record(run, target),
        resumed_from_step=run.first_step,
    )


def _memory_record(run: _Run, target) -> dict:
    """The estimate next to what was measured, with the micro-batch and checkpointing actually used."""
    peak, kind = measured_peak(target)
    return {
        "estimate": run.memory.to_dict(),
        "measured_peak_bytes": peak,
        "measured_kind": kind,
        "measured_training_state_bytes": run.state_bytes,  # this process's trainable weights, gradients, AdamW moments
    }
