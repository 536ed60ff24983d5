"""Perplexity over non-overlapping windows, with the forward throughput measured on the way."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prunekit.data.windows import TokenWindows
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
    tokens_per_second: float  # forward tokens (all window positions) per wall-clock second

    def to_dict(self) -> dict:
        return asdict(self)


def next_token_nll(logits: torch.Tensor, batch: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood inside each window, and how many tokens it covers."""
    shift = logits[:, :-1].float()
    labels = batch[:, 1:].to(logits.device)
    return F.cross_entropy(shift.reshape(-1, shift.shape[-1]), labels.reshape(-1), reduction="sum").item(), labels.numel()


def _offloaded_logits(model, windows: TokenWindows, batch_size: int, device, progress: bool):
    """Per-batch logits from the sequential engine: one block on the device at a time."""
    from prunekit.engine.sequential import SequentialRunner

    runner = SequentialRunner(model, device=device, offload=True, batch_size=batch_size, progress=progress)
    outputs = runner.run_blocks(runner.capture(windows.input_ids), range(runner.adapter.num_blocks))
    for start, hidden in zip(range(0, windows.num_windows, batch_size), outputs):
        yield windows.input_ids[start: start + batch_size], runner.logits(hidden)


@torch.no_grad()
def perplexity(model, windows: TokenWindows, *, batch_size: int = 1, device=None, offload: bool = False,
               progress: bool = True) -> PerplexityResult:
    """exp(mean NLL) of every next-token prediction inside each window (GPTQ/SparseGPT protocol).

    With offload=True the model is run block by block (only one block on `device`), for models
    larger than the accelerator.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_count = 0.0, 0
    started = time.perf_counter()

    def plain_logits():
        for start in tqdm(range(0, windows.num_windows, batch_size), desc="perplexity", disable=not progress, leave=False):
            batch = windows.input_ids[start: start + batch_size].to(device)
            yield batch, model(input_ids=batch, use_cache=False).logits

    try:
        batches = _offloaded_logits(model, windows, batch_size, device, progress) if offload else plain_logits()
        for batch, logits in batches:
            nll, count = next_token_nll(logits, batch)
            total_nll, total_count = total_nll + nll, total_count + count
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    nll = total_nll / total_count
    if not math.isfinite(nll):
        raise PrunekitError("perplexity is not finite: the model produces NaN/inf logits on this data (try --dtype float32)")
    return PerplexityResult(math.exp(nll), nll, total_count, windows.num_windows, windows.seq_len, windows.description,
                            seconds, windows.num_tokens / seconds if seconds > 0 else float("inf"))
