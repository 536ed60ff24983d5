"""The IteRABRe benchmark refuses an unknown contender before it loads a model, not after earlier rows ran."""

import sys

import pytest

from conftest import load_benchmark


def test_an_unknown_contender_is_refused_before_anything_runs(monkeypatch, capsys):
    iterabre = load_benchmark("iterabre")
    monkeypatch.setattr(iterabre, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the contenders were checked"))
    monkeypatch.setattr(sys, "argv", ["iterabre.py", "--contenders", "iterabre", "no-such-method"])
    with pytest.raises(SystemExit) as stopped:
        iterabre.main()
    assert stopped.value.code == 2 and "no-such-method" in capsys.readouterr().err
