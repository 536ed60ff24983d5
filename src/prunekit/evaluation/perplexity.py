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


@torch.no_grad()
def perplexity(model, windows: TokenWindows, *, batch_size: int = 1, device=None, progress: bool = True) -> PerplexityResult:
    """exp(mean NLL) of every next-token prediction inside each window (GPTQ/SparseGPT protocol)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_count = 0.0, 0
    started = time.perf_counter()
    try:
        for start in tqdm(range(0, windows.num_windows, batch_size), desc="perplexity", disable=not progress, leave=False):
            batch = windows.input_ids[start: start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits
            shift = logits[:, :-1].float()
            labels = batch[:, 1:]
            total_nll += F.cross_entropy(shift.reshape(-1, shift.shape[-1]), labels.reshape(-1), reduction="sum").item()
            total_count += labels.numel()
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    nll = total_nll / total_count
    if not math.isfinite(nll):
        raise PrunekitError("perplexity is not finite: the model produces NaN/inf logits on this data (try --dtype float32)")
    return PerplexityResult(math.exp(nll), nll, total_count, windows.num_windows, windows.seq_len, windows.description,
                            seconds, windows.num_tokens / seconds if seconds > 0 else float("inf"))
