"""The CPU-ratio benchmark stops on a failing command with that command's own error line, not a traceback."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("cpu_ratio_benchmark", BENCHMARKS / "cpu_ratio.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_a_failing_command_stops_with_its_last_error_line():
    command = [sys.executable, "-c", "import sys; print('warming up', file=sys.stderr); sys.exit('error: no such model')"]
    with pytest.raises(SystemExit) as stopped:
        _module()._timed("liar", command, dict(os.environ))
    message = str(stopped.value)
    assert "'liar' failed (error: no such model)" in message
    assert "\n" not in message


def test_a_succeeding_command_is_timed():
    seconds = _module()._timed("scan", [sys.executable, "-c", "pass"], dict(os.environ))
    assert 0 < seconds < 60
