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

Each metric is a `BlockMetric` registered by name; `register_block_metric(MyMetric())` adds one that every
command and method taking a metric then accepts (`--metric`, `ShortGPTConfig(metric=...)`, IteRABRe, FlexiGPT).
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
from prunekit.scoring.registry import ScorerRegistry


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


class BlockMetric:
    """A way to score decoder blocks (higher = more important). Subclass it, set `name`, implement `score`,
    and register an instance with `register_block_metric`. `spans`: the metric scores spans of consecutive
    blocks (score i covers blocks i..i+span-1), so it takes a `span`."""

    name: str = ""
    spans: bool = False

    def score(self, model, windows: TokenWindows, *, span: int, engine: dict) -> tuple[list[float], dict]:
        """(one score per block or span start, details to record); `engine` holds device, offload, batch_size, progress."""
        raise NotImplementedError


class CapturedBlockMetric(BlockMetric):
    """A metric computed on the block-by-block run (one block's activations in memory at a time)."""

    def score(self, model, windows: TokenWindows, *, span: int, engine: dict) -> tuple[list[float], dict]:
        runner = SequentialRunner(model, **engine)
        return self.score_captured(runner, runner.capture(windows.input_ids), windows, span)

    def score_captured(self, runner: SequentialRunner, inputs: BlockInputs, windows: TokenWindows, span: int) -> tuple[list[float], dict]:
        raise NotImplementedError


class _Similarity(CapturedBlockMetric):
    """A distance between a block's (or span's) input and output, from the token cosine."""

    def distance(self, cos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_captured(self, runner, inputs, windows, span):
        return _similarity_scan(runner, inputs, self, span), {}


class BlockInfluence(_Similarity):
    name = "bi"

    def distance(self, cos):
        return 1.0 - cos


class AngularDistance(_Similarity):
    name, spans = "angular", True

    def distance(self, cos):
        return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


class OutputChange(CapturedBlockMetric):
    """How the model's output changes with the block removed: final-hidden cosine, or calibration loss."""

    def __init__(self, name: str, by_loss: bool):
        self.name, self.by_loss = name, by_loss

    def score_captured(self, runner, inputs, windows, span):
        return removal_scores(runner, inputs, windows, self.name)


class TaylorImportance(BlockMetric):
    name = "taylor"

    def score(self, model, windows, *, span, engine):
        device = engine["device"]
        device = torch.device(device) if device is not None else next(model.parameters()).device
        return _taylor_scan(model, windows, device, engine["batch_size"], engine["progress"]), {}


BLOCK_METRICS = ScorerRegistry(BlockMetric, "block metric", "metric")


def register_block_metric(metric: BlockMetric) -> BlockMetric:
    """Make `metric` available by its name everywhere a block metric is taken."""
    return BLOCK_METRICS.register(metric)


def block_metric_names() -> list[str]:
    return BLOCK_METRICS.names()


def block_metric(name: str, parameter: str = "metric") -> BlockMetric:
    """The registered metric called `name`, or a one-line error naming the known ones."""
    return BLOCK_METRICS.get(name, parameter)


def check_metric(metric: str, parameter: str = "metric") -> str:
    block_metric(metric, parameter)
    return metric


def _token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """In float64: arccos near cos=1 amplifies float32 rounding into visible nonzero distances."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


def _batches(windows: TokenWindows, batch_size: int) -> list[torch.Tensor]:
    return [windows.input_ids[s : s + batch_size] for s in range(0, windows.num_windows, batch_size)]


def _similarity_scan(runner: SequentialRunner, inputs: BlockInputs, metric: _Similarity, span: int) -> list[float]:
    """BI or angular distance in one pass: keep the last `span` block inputs to compare with."""
    num_blocks = runner.adapter.num_blocks
    sums = [0.0] * (num_blocks - span + 1)
    counts = [0] * (num_blocks - span + 1)
    history: deque[list[torch.Tensor]] = deque(maxlen=span)
    for index, block_in, block_out in runner.iterate(inputs, desc=f"scan {metric.name}"):
        history.append(block_in)
        start = index - span + 1
        if start < 0:
            continue
        for earlier, later in zip(history[0], block_out):
            cos = _token_cosine(earlier, later)
            value = metric.distance(cos)
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
    change = block_metric(metric)
    if not isinstance(change, OutputChange):
        raise ParameterError("metric", f"'{metric}' does not remove blocks; use one of {', '.join(_removal_metric_names())}")
    batches = _batches(windows, runner.batch_size)
    block_inputs: list[list[torch.Tensor]] = []
    final = inputs.hidden
    for _, block_in, block_out in runner.iterate(inputs, active, desc="cache block inputs"):
        block_inputs.append(block_in)
        final = block_out

    def measure(hidden: list[torch.Tensor], reference: list[torch.Tensor] | None) -> tuple[float, list[torch.Tensor]]:
        """(score contribution, normed final hidden states) of one candidate's final block outputs."""
        normed = [runner.final_hidden(h) for h in hidden]
        if not change.by_loss:
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
        scores.append(value - base_value if change.by_loss else value)
    details = {"base_loss": base_value} if change.by_loss else {}
    return scores, details


def _removal_metric_names() -> list[str]:
    return [name for name, metric in BLOCK_METRICS.entries.items() if isinstance(metric, OutputChange)]


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
    """Score every decoder block of `model` on calibration `windows` by `metric` (a registered name)."""
    scorer = block_metric(metric)
    adapter = ModelAdapter(model)
    span = span if scorer.spans else 1
    if scorer.spans and not 1 <= span < adapter.num_blocks:
        raise PrunekitError(
            f"{metric} span {span} must be between 1 and {adapter.num_blocks - 1} (the model has {adapter.num_blocks} blocks)"
        )
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    engine = {"device": device, "offload": offload, "batch_size": batch_size, "progress": progress}
    try:
        scores, details = scorer.score(model, windows, span=span, engine=engine)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    for value in scores:
        if not math.isfinite(value):
            raise PrunekitError(
                f"metric {metric} produced a non-finite score; the model gives NaN/inf activations on this data (try `dtype` float32)"
            )
    return BlockScores(metric, [float(s) for s in scores], windows.summary(), seconds, span=span, details=details)


for _metric in (BlockInfluence(), AngularDistance(), OutputChange("removal-cosine", False), OutputChange("removal-loss", True)):
    register_block_metric(_metric)
register_block_metric(TaylorImportance())
