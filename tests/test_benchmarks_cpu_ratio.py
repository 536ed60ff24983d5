"""The CPU-ratio benchmark stops on a failing command with that command's own error line, not a traceback."""

import os
import sys

import pytest

from conftest import load_benchmark


def _module():
    return load_benchmark("cpu_ratio")


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
