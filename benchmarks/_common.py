"""What every benchmark script shares: where the shared data lies and the common arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results"
# The C4 files that may be trained on, as patterns (the first 1,000 validation documents, the papers' C4 set, are not).
C4_TRAIN_PATTERNS = ("c4-train.*.jsonl", "c4-validation.sample.*.jsonl")


class BadInput(SystemExit):
    """Input a benchmark refuses: exit code 2, as prunekit's own commands, with the reason as its text."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def refuse(message: str) -> NoReturn:
    """One line on stderr that says what to do, exit code 2; rows already written stay."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise BadInput(message)


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """Parser with --model, --wikitext, --calibration, --calib-windows and --out already added."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--wikitext", default=str(SHARED / "wikitext-2-raw-v1" / "wiki.test.raw"))
    parser.add_argument("--calibration", default=str(SHARED / "c4" / "c4-train.00000-of-01024.first1000.jsonl"))
    parser.add_argument("--calib-windows", type=int, default=16)
    parser.add_argument("--out", default=str(RESULTS))
    return parser


def c4_train_spec(c4: Path) -> str:
    """The C4 training files under `c4` as one data SPEC (absolute, so it reads the same from any directory)."""
    return ",".join(str(Path(c4).resolve() / pattern) for pattern in C4_TRAIN_PATTERNS)


def git_commit() -> str:
    """The short commit of this checkout, which every results table names."""
    import subprocess

    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()


def verdict_text(comparison: dict) -> str:
    """A paired comparison (`prunekit.evaluation.significance.compare`) as one table cell."""
    return f"{comparison['difference']:+.3f} ± {comparison['standard_error']:.3f} {comparison['verdict']}"


def flores_versus(reference: dict, row: dict) -> str:
    """Paired difference in NLL over every FLORES window of every language both rows scored."""
    from prunekit.evaluation.significance import compare

    def windows(record: dict, language: str) -> list[float]:
        return record["flores"][language].get("window_nll", [])

    languages = [
        language
        for language in reference.get("flores", {})
        if language in row.get("flores", {}) and len(windows(reference, language)) == len(windows(row, language))
    ]
    a = [nll for language in languages for nll in windows(reference, language)]
    b = [nll for language in languages for nll in windows(row, language)]
    if len(a) < 2 or len(a) != len(b):
        return "-"
    return verdict_text(compare(a, b, higher_is_better=False))


def write_json(out: Path, name: str, results: dict) -> None:
    """Rewrite the results JSON (benchmarks call this after every row, so a stopped run keeps its rows)."""
    import json

    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")


def write_table(out: Path, name: str, table: str) -> None:
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
