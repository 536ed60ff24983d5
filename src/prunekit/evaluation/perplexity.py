"""Perplexity over non-overlapping windows, with the forward throughput measured on the way."""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prunekit.data.windows import TokenWindows
from prunekit.engine.sequential import SequentialRunner
from prunekit.errors import PrunekitError


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean next-token negative log-likelihood (nats)
    predicted_tokens: int
    windows: int
    seq_len: int
    data: str
    seconds: float
    tokens_per_second: float  # forward tokens per second, first batch (warm-up) excluded when there are several
    window_nll: list[float] = field(default_factory=list)  # mean NLL of each window: paired comparisons between models

    @property
    def nll_standard_error(self) -> float:
        """Standard error of the mean NLL over windows (windows, not tokens, are the independent units)."""
        n = len(self.window_nll)
        if n < 2:
            return float("nan")
        mean = sum(self.window_nll) / n
        return math.sqrt(sum((x - mean) ** 2 for x in self.window_nll) / (n - 1) / n)

    def to_dict(self) -> dict:
        return asdict(self)


def next_token_nll(logits: torch.Tensor, batch: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood inside each window, and how many tokens it covers."""
    per_window = window_nll_sums(logits, batch)
    return per_window.sum().item(), batch[:, 1:].numel()


def window_nll_sums(logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Each window's summed next-token negative log-likelihood."""
    shift = logits[:, :-1].float()
    labels = batch[:, 1:].to(logits.device)
    losses = F.cross_entropy(shift.reshape(-1, shift.shape[-1]), labels.reshape(-1), reduction="none")
    return losses.view(labels.shape).sum(dim=1)


def _offloaded_logits(model, windows: TokenWindows, batch_size: int, device, progress: bool):
    """Per-batch logits from the sequential engine: one block on the device at a time."""
    runner = SequentialRunner(model, device=device, offload=True, batch_size=batch_size, progress=progress)
    outputs = runner.run_blocks(runner.capture(windows.input_ids), range(runner.adapter.num_blocks))
    for start, hidden in zip(range(0, windows.num_windows, batch_size), outputs):
        yield windows.input_ids[start : start + batch_size], runner.logits(hidden)


@torch.no_grad()
def _progress_text(windows: TokenWindows, label: str) -> str:
    model = f" of {label}" if label else ""
    return f"perplexity{model} on {windows.description} ({windows.num_windows} windows x {windows.seq_len} tokens)"


def perplexity(
    model, windows: TokenWindows, *, batch_size: int = 1, device=None, offload: bool = False, progress: bool = True, label: str = ""
) -> PerplexityResult:
    """exp(mean NLL) of every next-token prediction inside each window (GPTQ/SparseGPT protocol).

    With offload=True the model is run block by block (only one block on `device`), for models
    larger than the accelerator.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_count, per_window = 0.0, 0, []
    started = time.perf_counter()

    def plain_logits():
        for start in tqdm(
            range(0, windows.num_windows, batch_size), desc=_progress_text(windows, label), disable=not progress, leave=False
        ):
            batch = windows.input_ids[start : start + batch_size].to(device)
            yield batch, model(input_ids=batch, use_cache=False).logits

    warm_started, warm_tokens = started, windows.num_tokens
    try:
        batches = _offloaded_logits(model, windows, batch_size, device, progress) if offload else plain_logits()
        for index, (batch, logits) in enumerate(batches):
            sums = window_nll_sums(logits, batch)
            per_window += (sums / (batch.shape[1] - 1)).tolist()
            total_nll, total_count = total_nll + sums.sum().item(), total_count + batch[:, 1:].numel()
            if index == 0 and not offload and windows.num_windows > batch.shape[0]:
                # Throughput excludes the first batch, which pays one-off warm-up costs.
                warm_started, warm_tokens = time.perf_counter(), windows.num_tokens - batch.numel()
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    warm_seconds = time.perf_counter() - warm_started
    nll = total_nll / total_count
    if not math.isfinite(nll):
        raise PrunekitError("perplexity is not finite: the model produces NaN/inf logits on this data (try `dtype` float32)")
    return PerplexityResult(
        math.exp(nll),
        nll,
        total_count,
        windows.num_windows,
        windows.seq_len,
        windows.description,
        seconds,
        warm_tokens / warm_seconds if warm_seconds > 0 else float("inf"),
        per_window,
    )


@dataclass
class RollingResult:
    """Document-level scores as lm-eval's `loglikelihood_rolling` computes them."""

    nll: float  # summed over every token of the document
    tokens: int
    words: int
    bytes: int

    @property
    def token_perplexity(self) -> float:
        return math.exp(self.nll / self.tokens)

    @property
    def word_perplexity(self) -> float:
        return math.exp(self.nll / self.words)

    @property
    def byte_perplexity(self) -> float:
        return math.exp(self.nll / self.bytes)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / self.bytes / math.log(2)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "token_perplexity": self.token_perplexity,
            "word_perplexity": self.word_perplexity,
            "byte_perplexity": self.byte_perplexity,
            "bits_per_byte": self.bits_per_byte,
        }


def rolling_windows(ids: list[int], prefix_token_id: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(model input, tokens predicted by its last positions) per window, exactly as lm-eval rolls a
    document: the first window starts from the prefix token, later ones keep one token of context,
    and the last one is left-extended to a full window."""
    first = min(max_len, len(ids))
    windows = [([prefix_token_id] + ids[: first - 1], ids[:first])]
    predicted = first
    while predicted < len(ids):
        scored = min(len(ids) - predicted, max_len)
        end = predicted + scored
        windows.append((ids[end - max_len - 1 : end - 1], ids[end - scored : end]))
        predicted += scored
    return windows


@torch.no_grad()
def rolling_loglikelihood(model, tokenizer, text: str, *, max_len: int, prefix_token_id: int | None = None, device=None) -> RollingResult:
    """Score every token of `text` (lm-eval's perplexity protocol for wikitext-style tasks)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if not ids:
        raise PrunekitError("cannot score an empty document")
    if prefix_token_id is None:
        prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total = 0.0
    for inputs, targets in rolling_windows(ids, prefix_token_id, max_len):
        logits = model(input_ids=torch.tensor([inputs], device=device), use_cache=False).logits[0, -len(targets) :].float()
        target_ids = torch.tensor(targets, device=device)[:, None]
        total -= torch.log_softmax(logits, dim=-1).gather(-1, target_ids).sum().item()
    return RollingResult(total, len(ids), len(re.split(r"\s+", text)), len(text.encode("utf-8")))
