"""When a difference between two models counts: paired over the same items, beyond two standard errors.

Benchmarks score every contender on the same items (windows of text, task questions), so the noise
that matters is that of the per-item differences, not of each mean on its own.
"""

from __future__ import annotations

import math


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of b - a over the same items."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired scores need the same items, at least two ({len(a)} against {len(b)})")
    diffs = [y - x for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(variance / len(diffs))


def verdict(mean: float, standard_error: float, higher_is_better: bool = True, sigmas: float = 2.0) -> str:
    """'better' or 'worse' (for b against a) only beyond `sigmas` standard errors, else 'tie'."""
    if abs(mean) <= sigmas * standard_error:
        return "tie"
    return "better" if (mean > 0) == higher_is_better else "worse"


def compare(a: list[float], b: list[float], higher_is_better: bool = True) -> dict:
    """Paired difference of b against a, with its verdict."""
    mean, se = paired_difference(a, b)
    return {"difference": mean, "standard_error": se, "verdict": verdict(mean, se, higher_is_better)}
