"""The recovery trainer shared by every method: distil the dense teacher into the pruned student.

Built on accelerate, so one code path runs on CPU, one GPU, or several (`accelerate launch`, which
shards the windows over processes and synchronises gradients). The budget is a number of tokens;
AdamW with linear warm-up and cosine decay; gradient accumulation; optional gradient checkpointing.
A non-finite loss or gradient stops training, restores the weights from before the run and raises
`RecoveryDiverged` with the step and learning rate, so a broken model is never returned.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prunekit.data.windows import TokenWindows
from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter
from prunekit.recovery.config import RecoveryConfig

log = logging.getLogger(__name__)


class RecoveryDiverged(PrunekitError):
    """The loss or the gradient became NaN/inf; the student holds its weights from before the run."""

    def __init__(self, step: int, learning_rate: float, loss: float):
        self.step, self.learning_rate, self.loss = step, learning_rate, loss
        super().__init__(f"recovery diverged at step {step} (loss {loss}, learning rate {learning_rate:.3g}); "
                         "the weights from before recovery were restored; retry with a lower --lr or --precision fp32")


@dataclass
class RecoveryResult:
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float
    loss_first: float     # mean objective over the first optimizer step (before any update)
    loss_last: float      # mean objective over the last optimizer step
    trainable_parameters: int
    data: str
    epochs: float         # how often the data was seen (over 1 means it was repeated)
    config: dict
    history: list[dict] = field(default_factory=list)  # one entry per optimizer step

    def to_dict(self) -> dict:
        return asdict(self)


def _mixed_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def make_accelerator(precision: str = "auto", device: str | torch.device | None = None):
    """An `Accelerator` for this run; a single process may switch precision between runs."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cpu = device is not None and torch.device(device).type == "cpu"
    target = torch.device("cpu") if cpu else PartialState(cpu=cpu).device
    mixed = _mixed_precision(precision, target)
    try:
        return Accelerator(mixed_precision=mixed, cpu=cpu)
    except ValueError:
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=mixed, cpu=cpu)


def _select_trainable(model, config: RecoveryConfig, blocks: list[int] | None):
    """Freeze everything, then unfreeze the scope; LoRA wraps the model with peft. Returns the model to train."""
    if config.scope == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                          target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, lora)
    for param in model.parameters():
        param.requires_grad_(config.scope == "full")
    if config.scope == "adapters":
        from prunekit.models.shared_blocks import OutputNorm, SharedLoRALinear

        owned = [m for m in model.modules() if isinstance(m, (SharedLoRALinear, OutputNorm))]
        if not owned:
            raise PrunekitError("recovery scope 'adapters' needs shared blocks (FlexiGPT); this model has none")
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


def _objective(student_out, teacher_out, input_ids, config: RecoveryConfig) -> tuple[torch.Tensor, dict]:
    """Weighted sum of KD (KL on tempered logits), LM cross-entropy and final-hidden MSE."""
    logits = student_out.logits.float()
    parts: dict[str, torch.Tensor] = {}
    if config.kd_weight:
        t = config.temperature
        student_log = F.log_softmax(logits / t, dim=-1)
        teacher_log = F.log_softmax(teacher_out.logits.float() / t, dim=-1)
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


def recover(student, windows: TokenWindows, config: RecoveryConfig | None = None, *, teacher=None,
            blocks: list[int] | None = None, device=None, progress: bool = True, accelerator=None) -> RecoveryResult:
    """Train `student` in place on `windows` for `config.tokens` tokens; returns what happened.

    `teacher` (the dense model) is needed for the distillation losses and is never changed.
    `blocks` lists the block indices trained under scope 'neighbours'. A LoRA run is merged into
    the student's weights before returning, so the result is a plain model again.
    """
    config = config or RecoveryConfig()
    config.check(teacher is not None)
    if windows.seq_len != config.seq_len:
        config = replace(config, seq_len=windows.seq_len)
    accelerator = accelerator or make_accelerator(config.precision, device)
    processes, rank = accelerator.num_processes, accelerator.process_index
    steps = config.steps(processes)
    micro_total = steps * config.grad_accumulation * processes  # micro-batches over all processes
    windows_needed = micro_total * config.micro_batch_size
    epochs = windows_needed / windows.num_windows
    if epochs > 1:
        log.warning("recovery data has %d windows but the budget needs %d: each window is seen %.1f times; "
                    "pass more data for a larger --recovery-tokens", windows.num_windows, windows_needed, epochs)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.cat([torch.randperm(windows.num_windows, generator=generator) for _ in range(math.ceil(epochs))])[:windows_needed]

    torch.manual_seed(config.seed)
    was_training, use_cache = student.training, getattr(student.config, "use_cache", None)
    student.config.use_cache = False
    model = _select_trainable(student, config, blocks)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PrunekitError("nothing to train: the recovery scope selected no parameters")
    snapshot = _snapshot(model)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps), steps)
    model.train()
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if teacher is not None:
        teacher.eval()
        teacher.to(accelerator.device)
    want_hidden = config.hidden_weight > 0
    history: list[dict] = []
    started = time.perf_counter()
    diverged: RecoveryDiverged | None = None
    try:
        bar = tqdm(range(steps), desc="recovery", disable=not (progress and accelerator.is_main_process), leave=False)
        for step in bar:
            step_loss, parts_sum = 0.0, {}
            for micro in range(config.grad_accumulation):
                index = (step * config.grad_accumulation + micro) * processes + rank
                rows = order[index * config.micro_batch_size: (index + 1) * config.micro_batch_size]
                input_ids = windows.input_ids[rows].to(accelerator.device)
                teacher_out = None
                if teacher is not None:
                    with torch.no_grad(), accelerator.autocast():
                        teacher_out = teacher(input_ids=input_ids, output_hidden_states=want_hidden, use_cache=False)
                sync = micro == config.grad_accumulation - 1
                with nullcontext() if sync else accelerator.no_sync(prepared):
                    with accelerator.autocast():
                        student_out = prepared(input_ids=input_ids, output_hidden_states=want_hidden, use_cache=False)
                    loss, parts = _objective(student_out, teacher_out, input_ids, config)
                    if not torch.isfinite(loss):
                        raise RecoveryDiverged(step + 1, scheduler.get_last_lr()[0], loss.item())
                    accelerator.backward(loss / config.grad_accumulation)
                step_loss += loss.item() / config.grad_accumulation
                for name, value in parts.items():
                    parts_sum[name] = parts_sum.get(name, 0.0) + value / config.grad_accumulation
            norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm) if config.max_grad_norm else None
            if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                raise RecoveryDiverged(step + 1, scheduler.get_last_lr()[0], float("nan"))
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            history.append({"step": step + 1, "loss": step_loss, "lr": learning_rate,
                            "grad_norm": float(norm) if norm is not None else None, **parts_sum})
            bar.set_postfix(loss=f"{step_loss:.4f}")
    except RecoveryDiverged as error:
        diverged = error
    finally:
        optimizer.zero_grad(set_to_none=True)
        model = accelerator.unwrap_model(prepared)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        if diverged is not None:
            _restore(model, snapshot)
        if config.scope == "lora":
            model = model.unload() if diverged is not None else model.merge_and_unload()
        for param in model.parameters():
            param.requires_grad_(True)
        model.train(was_training)
        student.config.use_cache = use_cache
        accelerator.free_memory()
    if diverged is not None:
        raise diverged
    seconds = time.perf_counter() - started
    tokens = steps * config.tokens_per_step(processes)
    return RecoveryResult(
        steps=steps, tokens=tokens, seconds=seconds, tokens_per_second=tokens / seconds if seconds else 0.0,
        loss_first=history[0]["loss"], loss_last=history[-1]["loss"], trainable_parameters=sum(p.numel() for p in trainable),
        data=windows.description, epochs=epochs, config=config.to_dict(), history=history,
    )
