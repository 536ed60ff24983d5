"""Paired differences and their verdicts."""

from __future__ import annotations

import math

import pytest

from prunekit.evaluation.significance import compare, paired_difference, verdict


def test_paired_difference_is_the_mean_and_standard_error_of_the_item_differences():
    mean, se = paired_difference([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.5, 4.0])
    assert mean == pytest.approx(0.25) and se == pytest.approx(math.sqrt(1 / 12 / 4))


def test_pairing_removes_the_noise_both_models_share():
    a = [float(i % 7) for i in range(100)]
    b = [x + 0.1 for x in a]  # every item a little better: a clear win though the means' own spreads overlap
    assert compare(a, b)["verdict"] == "better" and compare(a, b, higher_is_better=False)["verdict"] == "worse"


def test_small_or_noisy_differences_are_ties_and_mismatched_items_are_refused():
    assert verdict(0.01, 0.01) == "tie" and verdict(-0.05, 0.01) == "worse" and verdict(-0.05, 0.01, higher_is_better=False) == "better"
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1.0, 2.0], [1.0])
