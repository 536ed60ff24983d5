"""Token windows: seeded random calibration windows and non-overlapping evaluation windows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import torch

from prunekit.data.sources import Purpose, load_text
from prunekit.errors import ParameterError, PrunekitError
from prunekit.fingerprints import token_digest

DEFAULT_CALIBRATION_WINDOWS = 16  # enough for block scores; LIAR asks for more (its method spec says how many)


@dataclass
class TokenWindows:
    """A [num_windows, seq_len] batch of token ids and where it came from."""

    input_ids: torch.Tensor
    description: str
    total_tokens_available: int
    origin: dict | None = None  # how load_windows made them (spec, text_field, seed), so a plan can make them again

    @property
    def num_windows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    def first(self, count: int) -> "TokenWindows":
        """The first `count` windows (all of them when there are fewer); seeded calibration windows are drawn in order,
        so the first 16 of 64 are the 16 the same seed gives alone."""
        return self if count >= self.num_windows else replace(self, input_ids=self.input_ids[:count])

    def summary(self, origin: bool = True) -> dict:
        """What a plan records of its calibration data; with `origin`, enough to load the same windows again."""
        summary = {
            "data": self.description,
            "windows": self.num_windows,
            "seq_len": self.seq_len,
            "tokens": self.num_tokens,
            "content": token_digest(self.input_ids),  # what a replay or resume checks the data against
        }
        return {**summary, **(self.origin or {})} if origin else summary


def tokenize_text(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one id sequence (as GPTQ-style perplexity does), without length warnings."""
    ids = tokenizer(text, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def _require(ids: torch.Tensor, seq_len: int, description: str) -> None:
    if seq_len < 2:
        raise PrunekitError(f"sequence length {seq_len} is too short; use at least 2 tokens")
    if ids.numel() < seq_len:
        raise PrunekitError(
            f"data {description} has {ids.numel()} tokens, fewer than one window of {seq_len}; use more text or a shorter `window_seq_len`"
        )


MAX_PASSES = 100  # calibration windows are drawn with replacement; beyond this many tokens per token of data nothing is gained


def _check_window_count(num_windows: int, seq_len: int, available_tokens: int, description: str) -> None:
    """Refuse, before allocating, a window count that reads the data more than MAX_PASSES times over or whose
    token ids would not fit in half the free memory (a `windows: 1000000000` typo would otherwise allocate gigabytes)."""
    most = max(1, MAX_PASSES * available_tokens // seq_len)
    if num_windows > most:
        raise ParameterError(
            "windows",
            f"{num_windows} (of {seq_len} tokens each) would read the {available_tokens} tokens of {description} "
            f"{num_windows * seq_len / available_tokens:.0f} times over; ask for at most {most}",
        )
    needed = num_windows * seq_len * 8 * 2  # int64 ids, and the slices stacked into them
    free = psutil.virtual_memory().available
    if needed > free // 2:
        raise ParameterError(
            "windows",
            f"{num_windows} (of {seq_len} tokens each) needs {needed / 2**30:.1f} GiB, more than half the free memory",
        )


def calibration_windows(ids: torch.Tensor, num_windows: int, seq_len: int, seed: int = 0, description: str = "") -> TokenWindows:
    """`num_windows` windows of `seq_len` tokens at seeded random offsets (reproducible)."""
    _require(ids, seq_len, description)
    if num_windows < 1:
        raise PrunekitError("ask for at least one calibration window")
    _check_window_count(num_windows, seq_len, ids.numel(), description)
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len + 1, (num_windows,), generator=generator)
    batch = torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
    return TokenWindows(batch, description, ids.numel())


def evaluation_windows(ids: torch.Tensor, seq_len: int, max_windows: int | None = None, description: str = "") -> TokenWindows:
    """Consecutive non-overlapping windows from the start; a trailing partial window is dropped."""
    _require(ids, seq_len, description)
    count = ids.numel() // seq_len
    if max_windows is not None:
        count = min(count, max_windows)
    batch = ids[: count * seq_len].view(count, seq_len)
    return TokenWindows(batch, description, ids.numel())


def load_windows(
    spec: str, tokenizer, *, purpose: Purpose, num_windows: int | None, seq_len: int, seed: int = 0, text_field: str = "text"
) -> TokenWindows:
    """Text SPEC -> token windows: random windows for calibration, leading ones for evaluation."""
    source = load_text(spec, purpose, text_field)
    if not source.text.strip():
        raise PrunekitError(f"data {source.description} is empty")
    ids = tokenize_text(tokenizer, source.text)
    if purpose == "calibration":
        windows = calibration_windows(ids, num_windows or DEFAULT_CALIBRATION_WINDOWS, seq_len, seed, source.description)
        recorded = str(Path(spec).resolve()) if Path(spec).is_file() else spec  # a plan re-applied from elsewhere finds it
        return replace(windows, origin={"spec": recorded, "text_field": text_field, "seed": seed})
    return evaluation_windows(ids, seq_len, num_windows, source.description)
