"""A user's budget, as typed: sizes with units, parameter counts or fractions, a decode speed-up."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prunekit.errors import ParameterError

SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?"


def _number(text: str) -> tuple[float, str] | None:
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Z%]*)", text.strip())
    if not match:
        return None
    value = float(match.group(1)) * (10 ** int(match.group(2)) if match.group(2) else 1)
    return value, match.group(3).lower()


def size_text(count: int) -> str:
    """Bytes as a person reads them: KiB below a MiB, MiB below a GiB, GiB above."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def parse_bytes(text: str, flag: str = "--max-bytes") -> int:
    """'80MiB', '100 MB', '1.5GiB', '123456' (bytes) -> bytes."""
    parsed = _number(str(text))
    if parsed is None or (parsed[1] or "b") not in SIZE_UNITS:
        raise ParameterError(flag, f"'{text}' is not a size; write a number with B, KB/MB/GB or KiB/MiB/GiB (e.g. 80MiB)")
    value = int(parsed[0] * SIZE_UNITS[parsed[1] or "b"])
    if value <= 0:
        raise ParameterError(flag, f"'{text}' must be above zero")
    return value


def parse_params(text: str, dense_params: int | None = None, flag: str = "--max-params") -> int:
    """'100M', '1.2B', '135000000' (a count) or '0.7' / '70%' (a fraction of the dense model) -> parameters."""
    parsed = _number(str(text))
    if parsed is None or parsed[1] not in (*COUNT_SUFFIXES, "%"):
        raise ParameterError(flag, f"'{text}' is not a parameter count; write e.g. 100M, 1.2B, 135000000, 0.7 or 70%")
    value, unit = parsed
    fraction = unit == "%" or (unit == "" and value < 1)
    if fraction:
        share = value / 100 if unit == "%" else value
        if not 0 < share < 1:
            raise ParameterError(flag, f"'{text}' as a share of the dense model must be between 0 and 1 (0 and 100%)")
        if dense_params is None:
            raise ParameterError(flag, f"'{text}' is a share of the dense model, which is not known here; give a count")
        return int(share * dense_params)
    count = int(value * COUNT_SUFFIXES[unit])
    if count <= 0:
        raise ParameterError(flag, f"'{text}' must be above zero")
    return count


def parse_speedup(text: str, flag: str = "--min-speedup") -> float:
    """'1.2' or '1.2x' -> 1.2 (decode tokens/s over the dense model's at the same GGUF type)."""
    parsed = _number(str(text))
    if parsed is None or parsed[1] not in ("", "x"):
        raise ParameterError(flag, f"'{text}' is not a speed-up; write e.g. 1.2 or 1.2x")
    if not 1.0 < parsed[0] <= 10.0:
        raise ParameterError(flag, f"'{text}' must be above 1 (the dense model's speed) and at most 10")
    return parsed[0]


@dataclass
class FitTargets:
    """What the fitted model must meet; None where the user set no bound."""

    max_bytes: int | None = None
    max_params: int | None = None
    min_speedup: float | None = None

    @property
    def needs_gguf(self) -> bool:
        return self.max_bytes is not None or self.min_speedup is not None

    def check(self) -> None:
        if self.max_bytes is None and self.max_params is None and self.min_speedup is None:
            raise ParameterError("--max-bytes", "or --max-params or --min-speedup: give at least one target")

    def describe(self) -> str:
        parts = []
        if self.max_bytes is not None:
            parts.append(f"at most {size_text(self.max_bytes)}")
        if self.max_params is not None:
            parts.append(f"at most {self.max_params / 1e6:.1f}M parameters")
        if self.min_speedup is not None:
            parts.append(f"at least {self.min_speedup:g}x the dense decode speed at the same type")
        return ", ".join(parts)

    def met(self, bytes_: int | None, params: int, speedup: float | None) -> bool:
        return (
            (self.max_bytes is None or (bytes_ is not None and bytes_ <= self.max_bytes))
            and (self.max_params is None or params <= self.max_params)
            and (self.min_speedup is None or (speedup is not None and speedup >= self.min_speedup))
        )
