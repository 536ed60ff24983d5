"""Speed and memory of a model as users run it: prefill and cached decode throughput, peak memory,
parameter count and weight size, with warm-up and repeats (the median is reported)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prunekit.models.adapters import parameter_count


@dataclass
class SpeedResult:
    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    prompt_tokens: int
    new_tokens: int
    batch_size: int
    repeats: int
    parameters: int
    weight_bytes: int  # bytes of the parameters in memory (tied weights once)
    disk_bytes: int | None  # size of the .safetensors files, when the model came from a directory
    peak_memory_bytes: int  # CUDA: peak allocated; CPU: peak resident set size of the process
    peak_memory_kind: str
    device: str
    dtype: str

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of `fn` over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def disk_size(directory: str | Path | None) -> int | None:
    if not directory or not Path(directory).is_dir():
        return None
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


def weight_bytes(model) -> int:
    """Bytes of a module's weights, shared (tied) ones counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@torch.no_grad()
def measure_speed(
    model,
    *,
    prompt_tokens: int = 512,
    new_tokens: int = 64,
    batch_size: int = 1,
    repeats: int = 3,
    source_dir: str | Path | None = None,
    seed: int = 0,
) -> SpeedResult:
    """Prefill = one forward over the prompt (building the KV cache); decode = greedy generation of
    `new_tokens` more tokens with the cache, its time net of the prefill."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    context = getattr(model.config, "max_position_embeddings", None)
    if context and prompt_tokens + new_tokens > context:  # a short-context model measures a shorter prompt
        prompt_tokens = max(1, context - new_tokens)
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (batch_size, prompt_tokens), generator=generator).to(device)
    was_training = model.training
    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        prefill = _timed(lambda: model(input_ids=prompt, use_cache=True), device, repeats)
        generate_kwargs = dict(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0,
        )
        full = _timed(lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **generate_kwargs), device, repeats)
    finally:
        model.train(was_training)
    decode_seconds = max(full - prefill, 1e-9)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:
        peak, kind = peak_rss_bytes(), "process_peak_rss"
    return SpeedResult(
        prefill_tokens_per_second=batch_size * prompt_tokens / prefill,
        decode_tokens_per_second=batch_size * new_tokens / decode_seconds,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        batch_size=batch_size,
        repeats=repeats,
        parameters=parameter_count(model),
        weight_bytes=weight_bytes(model),
        disk_bytes=disk_size(source_dir),
        peak_memory_bytes=peak,
        peak_memory_kind=kind,
        device=str(device),
        dtype=str(next(model.parameters()).dtype),
    )
