"""Block importance: how much each decoder block matters, by the field's standard metrics.

All scores follow one convention: higher = more important, so the blocks to remove are the ones
with the lowest scores.

- `bi` (ShortGPT Block Influence): 1 - mean token cosine between a block's input and output.
- `angular` (Gromov et al.): arccos(cos(X_i, X_{i+span})) / pi averaged over tokens; with span n
  the score of start i covers blocks i..i+n-1.
- `removal-cosine`: 1 - mean token cosine between the final (normed) hidden states of the model
  with and without the block (IteRABRe's output similarity).
- `removal-loss`: increase of the calibration LM loss when the block is removed (SLEB, Shortened
  LLaMA PPL).
- `taylor`: sum |w * dL/dw| over the block's weights (Shortened LLaMA Taylor+).

`bi` and `angular` cost one block-by-block pass. The removal metrics cache every block's input so
candidate i runs only blocks i+1..L-1, not a full forward.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prunekit.data.windows import TokenWindows
from prunekit.engine.sequential import BlockInputs, SequentialRunner
from prunekit.errors import ParameterError, PrunekitError
from prunekit.evaluation.perplexity import next_token_nll
from prunekit.models.adapters import ModelAdapter

METRICS = ("bi", "angular", "removal-cosine", "removal-loss", "taylor")


@dataclass
class BlockScores:
    """Per-block importance scores (higher = more important) and how they were measured."""

    metric: str
    scores: list[float]
    data: dict
    seconds: float
    span: int = 1
    details: dict = field(default_factory=dict)

    def ranking(self) -> list[int]:
        """Block (or span start) indices, least important first."""
        return sorted(range(len(self.scores)), key=lambda i: (self.scores[i], i))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ranking"] = self.ranking()
        out["num_blocks"] = len(self.scores) + self.span - 1
        return out


def check_metric(metric: str, parameter: str = "metric") -> str:
    if metric not in METRICS:
        raise ParameterError(parameter, f"'{metric}' is unknown; choose one of {', '.join(METRICS)}")
    return metric


def _token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """In float64: arccos near cos=1 amplifies float32 rounding into visible nonzero distances."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


def _batches(windows: TokenWindows, batch_size: int) -> list[torch.Tensor]:
    return [windows.input_ids[s : s + batch_size] for s in range(0, windows.num_windows, batch_size)]


def _similarity_scan(runner: SequentialRunner, inputs: BlockInputs, metric: str, span: int) -> list[float]:
    """BI or angular distance in one pass: keep the last `span` block inputs to compare with."""
    num_blocks = runner.adapter.num_blocks
    sums = [0.0] * (num_blocks - span + 1)
    counts = [0] * (num_blocks - span + 1)
    history: deque[list[torch.Tensor]] = deque(maxlen=span)
    for index, block_in, block_out in runner.iterate(inputs, desc=f"scan {metric}"):
        history.append(block_in)
        start = index - span + 1
        if start < 0:
            continue
        for earlier, later in zip(history[0], block_out):
            cos = _token_cosine(earlier, later)
            value = 1.0 - cos if metric == "bi" else torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi
            sums[start] += value.sum().item()
            counts[start] += value.numel()
    return [s / c for s, c in zip(sums, counts)]


def removal_scores(
    runner: SequentialRunner, inputs: BlockInputs, windows: TokenWindows, metric: str, active: list[int] | None = None
) -> tuple[list[float], dict]:
    """Output change with each block of `active` removed, reusing the cached input of every block.

    `active` lists the blocks that make up the model being judged (default: all), so iterative
    methods can score a virtually pruned model without touching the real one.
    """
    active = list(range(runner.adapter.num_blocks)) if active is None else list(active)
    batches = _batches(windows, runner.batch_size)
    block_inputs: list[list[torch.Tensor]] = []
    final = inputs.hidden
    for _, block_in, block_out in runner.iterate(inputs, active, desc="cache block inputs"):
        block_inputs.append(block_in)
        final = block_out

    def measure(hidden: list[torch.Tensor], reference: list[torch.Tensor] | None) -> tuple[float, list[torch.Tensor]]:
        """(score contribution, normed final hidden states) of one candidate's final block outputs."""
        normed = [runner.final_hidden(h) for h in hidden]
        if metric == "removal-cosine":
            if reference is None:
                return 0.0, normed
            total = sum(_token_cosine(n, r).sum().item() for n, r in zip(normed, reference))
            return 1.0 - total / windows.num_tokens, normed
        loss, count = 0.0, 0
        for n, ids in zip(normed, batches):
            batch_loss, batch_count = next_token_nll(runner.adapter.logits(n), ids)
            loss, count = loss + batch_loss, count + batch_count
        return loss / count, normed

    base_value, reference = measure(final, None)
    scores = []
    for position in tqdm(range(len(active)), desc=f"scan {metric}", disable=not runner.progress, leave=False):
        later = active[position + 1 :]
        hidden = runner.run_blocks(BlockInputs(block_inputs[position], inputs.block_kwargs), later)
        value, _ = measure(hidden, reference)
        scores.append(value - base_value if metric == "removal-loss" else value)
    details = {"base_loss": base_value} if metric == "removal-loss" else {}
    return scores, details


def _taylor_scan(model, windows: TokenWindows, device: torch.device, batch_size: int, progress: bool) -> list[float]:
    """First-order Taylor importance from gradients accumulated over the calibration windows."""
    adapter = ModelAdapter(model)
    params = list(model.parameters())
    previous = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    try:
        for batch in tqdm(_batches(windows, batch_size), desc="scan taylor", disable=not progress, leave=False):
            batch = batch.to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            (loss * batch.shape[0] / windows.num_windows).backward()
        scores = []
        for layer in adapter.layers:
            total = sum((p.detach().float() * p.grad.float()).abs().sum().item() for p in layer.parameters() if p.grad is not None)
            scores.append(total)
    finally:
        for p, flag in zip(params, previous):
            p.grad = None
            p.requires_grad_(flag)
    return scores


def scan_blocks(
    model,
    windows: TokenWindows,
    metric: str = "bi",
    *,
    span: int = 1,
    device=None,
    offload: bool = False,
    batch_size: int = 1,
    progress: bool = True,
) -> BlockScores:
    """Score every decoder block of `model` on calibration `windows` by `metric`."""
    check_metric(metric)
    adapter = ModelAdapter(model)
    if metric == "angular" and not 1 <= span < adapter.num_blocks:
        raise PrunekitError(
            f"angular span {span} must be between 1 and {adapter.num_blocks - 1} (the model has {adapter.num_blocks} blocks)"
        )
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    details: dict = {}
    try:
        if metric == "taylor":
            device = torch.device(device) if device is not None else next(model.parameters()).device
            scores = _taylor_scan(model, windows, device, batch_size, progress)
        else:
            runner = SequentialRunner(model, device=device, offload=offload, batch_size=batch_size, progress=progress)
            inputs = runner.capture(windows.input_ids)
            if metric in ("bi", "angular"):
                scores = _similarity_scan(runner, inputs, metric, span if metric == "angular" else 1)
            else:
                scores, details = removal_scores(runner, inputs, windows, metric)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    for value in scores:
        if not math.isfinite(value):
            raise PrunekitError(
                f"metric {metric} produced a non-finite score; the model gives NaN/inf activations on this data (try `dtype` float32)"
            )
    return BlockScores(
        metric, [float(s) for s in scores], windows.summary(), seconds, span=span if metric == "angular" else 1, details=details
    )
