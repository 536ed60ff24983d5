"""Budgets as typed: sizes with decimal and binary units, parameter counts or shares, speed-ups; bad ones name their flag."""

import pytest

from prunekit.errors import ParameterError
from prunekit.fitting.targets import FitTargets, parse_bytes, parse_params, parse_speedup


@pytest.mark.parametrize(
    "text, expected",
    [("80MiB", 80 * 2**20), ("100 MB", 100 * 10**6), ("1.5GiB", int(1.5 * 2**30)), ("123456", 123456), ("2kb", 2000), ("512B", 512)],
)
def test_sizes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["80 furlongs", "MiB", "-5MB", "0", "1e", ""])
def test_bad_sizes_name_the_flag(text):
    with pytest.raises(ParameterError, match="--max-bytes"):
        parse_bytes(text)


def test_parameter_counts_and_shares():
    assert parse_params("100M") == 100_000_000
    assert parse_params("1.2B") == 1_200_000_000
    assert parse_params("135000000") == 135_000_000
    assert parse_params("0.7", dense_params=1000) == 700
    assert parse_params("70%", dense_params=1000) == 700
    for bad in ("7 apples", "150%", "0%"):
        with pytest.raises(ParameterError, match="--max-params"):
            parse_params(bad, dense_params=1000)


def test_speedups():
    assert parse_speedup("1.2x") == 1.2 and parse_speedup("1.4") == 1.4
    for bad in ("0.9", "1", "fast", "11"):
        with pytest.raises(ParameterError, match="--min-speedup"):
            parse_speedup(bad)


def test_targets_need_one_bound_and_say_what_they_ask():
    with pytest.raises(ParameterError, match="at least one target"):
        FitTargets().check()
    targets = FitTargets(max_bytes=2**20, min_speedup=1.2)
    assert targets.needs_gguf and "1.0 MiB" in targets.describe() and "1.2x" in targets.describe()
    assert targets.met(2**20, 10, 1.25) and not targets.met(2**20 + 1, 10, 1.25) and not targets.met(2**20, 10, 1.1)
