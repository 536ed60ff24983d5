"""Mistaken and hostile input as a new user would give it, through the command line on real file layouts:
no writer puts its output on, in or over an input; a failed run leaves nothing that blocks its retry; data that
changed under its name is noticed; every refusal is one line with exit code 2."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from prunekit.cli import main

PRUNEKIT = [sys.executable, "-m", "prunekit.cli"]


def run(capsys, *argv):
    code = main([str(a) for a in argv] + ["--quiet"] * ("--quiet" not in argv and argv[0] not in ("report", "cache")))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    """A copy of the tiny checkpoint that a test may see damaged without harming the others."""
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    return copy


def contents(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def shards(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(topics)
    for part in range(count):
        (folder / f"part-{part}.jsonl").write_text("\n".join(json.dumps({"text": topics[k]}) for k in keys[part::count]) + "\n")
    return folder


RECOVER = ["--recovery-tokens", "1024", "--recovery-seq-len", "32", "--grad-accumulation", "1", "--heldout-windows", "0"]
RECOVER_INTO = ["recover", "--model", "{ckpt}", "--recovery-data", "builtin", "--out", "{tmp}/r", *RECOVER]


# -- one output rule --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "--model", "{ckpt}", "--to", "gguf", "--out", "{ckpt}/model.safetensors", "--overwrite"], "is inside the input"),
        (["export", "--model", "{ckpt}", "--out", "{ckpt}/sub/model.gguf"], "is inside the input"),
        (["eval", "--model", "{ckpt}", "--out", "{ckpt}/eval.json"], "is inside the input"),
        (["scan", "--model", "{ckpt}", "--out", "{ckpt}/scan.json"], "is inside the input"),
        (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--gguf", "{ckpt}/m.gguf"], "is inside the input"),
        (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--vllm", "{tmp}/o/vllm"], "is inside the input"),
        (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--vllm", "{tmp}/o"], "same directory as --out"),
        (["fit", "--model", "{ckpt}", "--max-bytes", "1MB", "--out", "{ckpt}/fit"], "is inside the input"),
        (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}", "--overwrite"], "holds the input"),
        ([*RECOVER_INTO, "--run-dir", "{ckpt}"], "is the input"),
        ([*RECOVER_INTO, "--run-dir", "{tmp}/r/run"], "lies on or in"),
        ([*RECOVER_INTO, "--run-dir", "{tmp}/afile"], "is a file"),
    ],
)
def test_no_output_lies_on_in_or_over_an_input(checkpoint, tmp_path, capsys, argv, message):
    (tmp_path / "afile").write_text("mine")
    before = contents(checkpoint)
    code, _, err = run(capsys, *[a.format(ckpt=checkpoint, tmp=tmp_path) for a in argv])
    assert code == 2 and message in err and one_line(err), err
    assert contents(checkpoint) == before and (tmp_path / "afile").read_text() == "mine"
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


def test_a_report_never_replaces_the_folder_that_holds_its_results(checkpoint, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    for name in ("a", "b"):
        assert run(capsys, "eval", "--model", checkpoint, "--windows", "2", "--seq-len", "32", "--out", results / f"{name}.json")[0] == 0
    kept = contents(results)
    code, _, err = run(capsys, "report", results / "a.json", results / "b.json", "--out", results, "--overwrite")
    assert code == 2 and "holds the input" in err and one_line(err) and contents(results) == kept


# -- failed runs leave nothing that blocks their retry -------------------------------------------------------
@pytest.mark.parametrize(
    "damage, extra, code, message",
    [
        (None, ["--lr", "1e30"], 1, "diverged"),
        (lambda d: (d / "binary.jsonl").write_bytes(bytes(range(256)) * 8), [], 2, "binary.jsonl"),
        (lambda d: (d / "cut.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20), [], 2, "cut.jsonl.gz"),
        (lambda d: (d / "notext.jsonl").write_text('{"body": "no text field here"}\n'), [], 2, "'text'"),
        (None, ["--sharding", "fsdp"], 2, "multi-process launch"),
    ],
)
def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_and_its_retry_runs(
    checkpoint, tmp_path, capsys, damage, extra, code, message
):
    data = shards(tmp_path / "data")
    if damage:
        damage(data)
    out = tmp_path / "recovered"
    argv = ["recover", "--model", checkpoint, "--recovery-data", data, "--out", out, *RECOVER]
    failed, _, err = run(capsys, *argv, *extra)
    assert failed == code and message in err and one_line(err), err
    assert not out.exists() and not Path(f"{out}.run").exists() and not list(tmp_path.glob(".recovered*"))
    for damaged in data.iterdir():
        if not damaged.name.startswith("part-"):
            damaged.unlink()
    retried, _, err = run(capsys, *argv)
    assert retried == 0, err


def test_a_run_that_fails_after_a_checkpoint_keeps_it_and_says_how_to_go_on(checkpoint, tmp_path, capsys, monkeypatch):
    from prunekit.errors import ComputationError
    from prunekit.recovery import trainer

    real_step, steps = trainer._step, []

    def failing_step(run_, step, chunk, want_hidden):
        steps.append(step)
        if step == 20:
            raise ComputationError("the disk went away")
        return real_step(run_, step, chunk, want_hidden)

    monkeypatch.setattr(trainer, "_step", failing_step)
    out = tmp_path / "recovered"
    argv = ["recover", "--model", checkpoint, "--recovery-data", shards(tmp_path / "data"), "--out", out, *RECOVER, "--save-every", "256"]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "the disk went away" in err and "keeps stage-1/checkpoint-0000016" in err and one_line(err)
    assert "continue with --resume, or start afresh with --overwrite" in err
    monkeypatch.setattr(trainer, "_step", real_step)
    assert run(capsys, *argv, "--resume")[0] == 0 and not Path(f"{out}.run").exists()


def test_resume_with_nothing_to_resume_says_so(checkpoint, tmp_path, capsys):
    argv = ["recover", "--model", checkpoint, "--recovery-data", "builtin", "--out", tmp_path / "r", *RECOVER, "--resume"]
    for run_dir in (tmp_path / "missing", tmp_path / "empty"):
        if run_dir.name == "empty":
            run_dir.mkdir()
        code, _, err = run(capsys, *argv, "--run-dir", run_dir)
        assert code == 2 and "nothing to resume" in err and one_line(err)
    assert (tmp_path / "empty").is_dir()  # the user's own folder stays


def test_a_run_directory_holding_other_files_is_never_cleared(checkpoint, tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "stage-1").mkdir(parents=True)
    (mine / "stage-1" / "notes.txt").write_text("keep")
    argv = ["recover", "--model", checkpoint, "--recovery-data", "builtin", "--out", tmp_path / "r", *RECOVER, "--run-dir", mine]
    code, _, err = run(capsys, *argv, "--overwrite")
    assert code == 2 and "not a recovery run" in err and (mine / "stage-1" / "notes.txt").read_text() == "keep"


def test_an_abbreviated_flag_is_not_taken_for_a_longer_one(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["recover", "--model", str(checkpoint), "--recovery-token", "5", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "unrecognized argument --recovery-token; did you mean --recovery-tokens?" in err


# -- data identified by content --------------------------------------------------------------------------
def test_recovery_data_that_changed_after_a_stop_is_refused_on_resume(checkpoint, tmp_path):
    data = tmp_path / "train.jsonl"
    keys = sorted(topics)
    data.write_text("\n".join(json.dumps({"text": topics[k]}) for k in keys[::2]) + "\n")
    out = tmp_path / "recovered"
    command = [*PRUNEKIT, "recover", "--model", str(checkpoint), "--recovery-data", str(data), "--out", str(out), "--quiet"]
    command += ["--recovery-tokens", "40000", "--recovery-seq-len", "32", "--grad-accumulation", "1", "--save-every", "64"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(Path(f"{out}.run").glob("stage-1/checkpoint-*")):
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    with data.open("a") as handle:  # the file grew
        handle.write(json.dumps({"text": topics[keys[1]]}) + "\n")
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert again.returncode == 2 and "data.content" in again.stderr and one_line(again.stderr), again.stderr


def test_a_liar_plan_whose_calibration_file_changed_is_refused(checkpoint, tmp_path, capsys):
    calibration = tmp_path / "calib.txt"
    calibration.write_text("\n".join(topics[k] for k in sorted(topics)[:40]))
    pruned = tmp_path / "pruned"
    argv = ["prune", "--model", checkpoint, "--method", "liar", "--ffn-ratio", "0.25", "--data", calibration, "--windows", "4"]
    assert run(capsys, *argv, "--seq-len", "64", "--out", pruned)[0] == 0
    assert run(capsys, "prune", "--model", checkpoint, "--plan", pruned, "--out", tmp_path / "again")[0] == 0
    calibration.write_text(calibration.read_text().replace("the", "a"))
    code, _, err = run(capsys, "prune", "--model", checkpoint, "--plan", pruned, "--out", tmp_path / "edited")
    assert code == 2 and "has changed since" in err and one_line(err) and not (tmp_path / "edited").exists()


def test_a_window_count_far_beyond_the_data_is_refused_before_allocating(checkpoint, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("- {method: shortgpt, remove: 1, windows: 1000000000}\n")
    code, _, err = run(capsys, "prune", "--model", checkpoint, "--recipe", recipe, "--seq-len", "32", "--out", tmp_path / "o")
    assert code == 2 and "ask for at most" in err and one_line(err) and not (tmp_path / "o").exists()


def test_an_iterabre_run_resumed_with_other_recovery_data_is_refused(checkpoint, tmp_path, capsys):
    data = shards(tmp_path / "data")
    args = ["prune", "--model", checkpoint, "--method", "iterabre", "--remove", 1, "--recovery-tokens", 512, "--recovery-seq-len", 32]
    args += ["--grad-accumulation", 1, "--heldout-windows", 0, "--windows", 2, "--seq-len", 32, "--run-dir", tmp_path / "run"]
    assert run(capsys, *args, "--recovery-data", data / "part-0.jsonl", "--out", tmp_path / "a")[0] == 0
    code, _, err = run(capsys, *args, "--recovery-data", data / "part-1.jsonl", "--out", tmp_path / "b", "--resume")
    assert code == 2 and "recovery_data[0].spec" in err and one_line(err)


# -- tidy: what a new user meets on the way ------------------------------------------------------------------
def test_two_processes_on_one_run_directory_are_told_apart_by_its_lock(checkpoint, tmp_path, capsys):
    run_dir = (tmp_path / "shared-run").resolve()
    holder = subprocess.Popen(  # a first process training there holds the run directory
        [sys.executable, "-c", f"from pathlib import Path; import sys, time; from prunekit.models.export import claim_output; "
         f"claim_output(Path({str(run_dir)!r})); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = [*RECOVER_INTO, "--run-dir", run_dir]
        code, _, err = run(capsys, *[str(a).format(ckpt=checkpoint, tmp=tmp_path) for a in argv])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "another prunekit run is writing" in err and one_line(err)


def test_only_the_main_process_prints_an_error(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    code, _, err = run(capsys, "eval", "--model", tmp_path / "missing")
    assert code == 2 and err == ""


def test_export_refuses_an_architecture_before_converting_anything(tmp_path, capsys, monkeypatch):
    from prunekit.commands import export as export_command

    (tmp_path / "gemma").mkdir()
    (tmp_path / "gemma" / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    monkeypatch.setattr(export_command, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the refusal"))
    code, _, err = run(capsys, "export", "--model", tmp_path / "gemma", "--out", tmp_path / "g.gguf")
    assert code == 2 and "gemma2 is not supported yet" in err and one_line(err)


def test_the_quantizer_log_stays_out_and_its_fallback_gets_one_note(checkpoint, tmp_path, capfd):
    code = main(["export", "--model", str(checkpoint), "--out", str(tmp_path / "q.gguf"), "--type", "q4_k_m", "--quiet"])
    out, err = capfd.readouterr()
    assert code == 0 and err == "" and "llama_model_quantize" not in out
    assert "are not in q4_k_m's k-quant blocks: their rows are not a multiple of 256" in out


def test_extend_without_training_says_its_adapters_are_untrained(checkpoint, tmp_path, capsys, caplog):
    code, out, _ = run(capsys, "extend", "--model", checkpoint, "--to-blocks", 6, "--recovery-tokens", 0, "--out", tmp_path / "deeper")
    assert code == 0 and "adapters untrained" in out and "extend: no adapter training" in caplog.text


def test_liar_on_the_default_calibration_text_says_so(checkpoint, tmp_path, capsys):
    argv = ["prune", "--model", checkpoint, "--method", "liar", "--ffn-ratio", 0.25, "--windows", 2, "--seq-len", 32]
    code, out, _ = run(capsys, *argv, "--out", tmp_path / "w")
    assert code == 0 and "note: liar calibrated on the built-in text" in out
    code, out, _ = run(capsys, *argv, "--data", "builtin", "--out", tmp_path / "w2")
    assert code == 0 and "note: liar calibrated" not in out  # asked for by name


def test_the_help_of_a_flag_that_turns_a_default_off_says_what_the_flag_does(capsys):
    with pytest.raises(SystemExit):
        main(["recover", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--fixed-micro-batch keep --micro-batch-size as given instead of regrouping" in text


def test_a_recovery_on_a_small_share_of_a_file_records_no_epoch(checkpoint, tmp_path, capsys):
    data = tmp_path / "big.txt"
    data.write_text("\n".join(topics[k] for k in sorted(topics)))
    out = tmp_path / "r"
    assert run(capsys, "recover", "--model", checkpoint, "--recovery-data", data, "--out", out, *RECOVER)[0] == 0
    assert json.loads((out / "prunekit_recovery.json").read_text())["epochs"] is None
