"""Whole prune commands in their own processes: two writers into one --out, and signals at any point."""

import signal
import subprocess
import sys
import time

import pytest


def prune_command(model, out):
    return [
        sys.executable,
        "-m",
        "prunekit.cli",
        "prune",
        "--model",
        str(model),
        "--method",
        "shortgpt",
        "--remove",
        "1",
        "--out",
        str(out),
        "--data",
        "builtin",
        "--windows",
        "2",
        "--seq-len",
        "32",
        "--quiet",
    ]


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def complete(out):
    return all((out / name).is_file() for name in ("model.safetensors", "config.json", "prunekit_plan.json"))


def test_two_prunes_into_one_out_never_both_succeed(tiny_checkpoint, tmp_path):
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        runs = [
            subprocess.Popen(prune_command(tiny_checkpoint, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [(run.wait(timeout=300), run.communicate()[1]) for run in runs]
        assert sorted(code for code, _ in results) == [0, 2], results
        loser = next(stderr for code, stderr in results if code == 2)
        assert len(loser.strip().splitlines()) == 1 and loser.startswith("prunekit: error:")
        assert complete(out) and not leftovers(tmp_path)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_at_any_point_leaves_a_whole_output_or_none(tiny_checkpoint, tmp_path, sig, code):
    started = time.perf_counter()
    subprocess.run(prune_command(tiny_checkpoint, tmp_path / "timing"), check=True, capture_output=True)
    duration = time.perf_counter() - started
    for share in (0.6, 0.85, 0.95):  # loading, computing, saving (roughly: the end of the run is the save)
        out = tmp_path / f"out-{share}"
        run = subprocess.Popen(prune_command(tiny_checkpoint, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(share * duration)
        run.send_signal(sig)
        returned = run.wait(timeout=300)
        stderr = run.communicate()[1]
        # before the command's handler is installed (during the imports) Python's own handling applies
        assert returned in (0, code, -sig) or "KeyboardInterrupt" in stderr, stderr
        assert complete(out) if returned == 0 else (complete(out) or not out.exists())  # a signal after the rename: whole
        assert not leftovers(tmp_path), leftovers(tmp_path)
        again = subprocess.run(prune_command(tiny_checkpoint, out) + (["--overwrite"] if out.exists() else []), capture_output=True)
        assert again.returncode == 0 and complete(out) and not leftovers(tmp_path)
