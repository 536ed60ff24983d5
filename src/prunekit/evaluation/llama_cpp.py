"""Measuring a GGUF file where it runs: llama.cpp's perplexity on token windows and its decode speed.

Perplexity comes from llama.cpp's own logits (each window from an empty cache, an f32 KV cache), so a
pruned-and-quantized file is judged by what its users will run, not by a transformers stand-in. Speed is
the median of repeated runs after one warm-up run, on `threads` threads.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import PrunekitError
from prunekit.export.gguf_writer import captured_stderr


def _llama(path: Path, threads: int, logits_all: bool = False, n_ctx: int = 1024):
    try:
        import llama_cpp
    except ImportError:
        raise PrunekitError("measuring a GGUF file needs llama.cpp's Python binding: pip install llama-cpp-python") from None
    with captured_stderr():  # its context's warnings (a context longer than trained, a padded V cache) are not the user's business
        return llama_cpp.Llama(
            str(path),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=logits_all,
            verbose=False,
            **({"type_k": 0, "type_v": 0} if logits_all else {}),
        )


def llama_cpp_window_nll(path: str | Path, windows, threads: int = 2) -> list[float]:
    """Mean next-token NLL of each window from llama.cpp's logits (each window evaluated from an empty cache)."""
    rows = windows.input_ids.tolist()
    llm = _llama(Path(path), threads, logits_all=True, n_ctx=max(1024, max(len(r) for r in rows)))
    out = []
    try:
        for row in rows:
            llm.reset()
            llm.eval(row)
            logits = torch.from_numpy(np.array(llm.scores[: len(row) - 1], dtype=np.float64))
            out.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor(row[1:]), reduction="mean")))
    finally:
        llm.close()
    return out


def _greedy(llm) -> int:
    """The most likely next token from the last logits llama.cpp computed (kept only in its context without logits_all)."""
    return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))


def _timed_run(llm, prompt: list[int], generate: int) -> tuple[float, float]:
    """(prompt seconds, decode seconds) of one run from an empty cache."""
    llm.reset()
    started = time.perf_counter()
    llm.eval(prompt)
    prefill_seconds = time.perf_counter() - started
    token = _greedy(llm)
    started = time.perf_counter()
    for _ in range(generate):
        llm.eval([token])
        token = _greedy(llm)
    return prefill_seconds, time.perf_counter() - started


def llama_cpp_speed(path: str | Path, prompt: list[int], generate: int, repeats: int, threads: int = 2) -> dict:
    """Median prompt-processing and generation tokens/s of `repeats` runs (one warm-up run first)."""
    llm = _llama(Path(path), threads)
    prefill, decode = [], []
    try:
        for run in range(repeats + 1):
            prefill_seconds, decode_seconds = _timed_run(llm, prompt, generate)
            if run:  # the first run warms caches and is not counted
                prefill.append(len(prompt) / prefill_seconds)
                decode.append(generate / decode_seconds)
    finally:
        llm.close()
    return {"prompt_tokens_per_s": statistics.median(prefill), "generation_tokens_per_s": statistics.median(decode), "runs": repeats}


def paired_decode_speed(
    first: str | Path, second: str | Path, prompt: list[int], generate: int = 64, rounds: int = 5, threads: int = 2
) -> tuple[float, float]:
    """Median decode tokens/s of two files measured in alternation (one warm-up run each): a load that comes and goes
    on the machine slows both alike, so their ratio, a speed-up, holds where two separate measurements would not."""
    models = [_llama(Path(first), threads), _llama(Path(second), threads)]
    speeds: list[list[float]] = [[], []]
    try:
        for llm in models:
            _timed_run(llm, prompt, generate)
        for _ in range(rounds):
            for llm, out in zip(models, speeds):
                out.append(generate / _timed_run(llm, prompt, generate)[1])
    finally:
        for llm in models:
            llm.close()
    return statistics.median(speeds[0]), statistics.median(speeds[1])
