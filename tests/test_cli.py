import json
import subprocess
import sys

import pytest
import torch
import transformers

from prunekit.cli import main

CALIB = ["--data", "builtin", "--windows", "2", "--seq-len", "32", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_scan_writes_json_and_png(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "scan.json"
    code, stdout, _ = run(capsys, "scan", "--model", tiny_checkpoint, "--metric", "removal-cosine", "--out", out, "--json", *CALIB)
    assert code == 0
    payload = json.loads(stdout)
    saved = json.loads(out.read_text())
    assert saved["metric"] == "removal-cosine" and len(saved["scores"]) == 4 and saved["data"]["tokens"] == 64
    assert payload["png_path"] == str(out.with_suffix(".png"))
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", ["shortgpt", "angular", "sleb"])
def test_prune_writes_a_reloadable_checkpoint_and_plan(tiny_checkpoint, tmp_path, capsys, method):
    out = tmp_path / "pruned"
    code, stdout, _ = run(capsys, "prune", "--model", tiny_checkpoint, "--method", method, "--remove", 2, "--out", out,
                          "--compare", "--eval-windows", 2, "--eval-seq-len", 32, *CALIB)
    assert code == 0, stdout
    assert "dense" in stdout and "pruned/dense" in stdout and (out / "report" / "report.md").is_file()
    plan = json.loads((out / "prunekit_plan.json").read_text())
    assert plan["method"] == method and len(plan["removed_blocks"]) == 2 and plan["versions"]["transformers"]
    evaluation = json.loads((out / "prunekit_eval.json").read_text())
    assert evaluation["pruned"]["blocks"] == 2 and evaluation["dense"]["blocks"] == 4
    assert evaluation["pruned"]["plan"]["method"] == method
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint).config.num_hidden_layers == 4


def test_plan_reapplies_to_identical_weights(tiny_checkpoint, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run(capsys, "prune", "--model", tiny_checkpoint, "--ratio", 0.5, "--out", first, *CALIB)[0] == 0
    assert run(capsys, "prune", "--model", tiny_checkpoint, "--plan", first, "--out", second, "--quiet")[0] == 0
    a = transformers.AutoModelForCausalLM.from_pretrained(first).state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(second).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_prints_perplexity_json(tiny_checkpoint, capsys):
    code, stdout, _ = run(capsys, "eval", "--model", tiny_checkpoint, "--ppl", "builtin", "--seq-len", 32, "--windows", 3, "--json", "--quiet")
    payload = json.loads(stdout)
    result = payload["perplexity"]["builtin"]
    assert code == 0 and result["windows"] == 3 and result["perplexity"] > 1 and payload["blocks"] == 4


@pytest.mark.parametrize("argv, message", [
    (["prune", "--model", "{tmp}/missing", "--remove", "1", "--out", "{tmp}/o"], "model not found"),
    (["prune", "--model", "{ckpt}", "--remove", "4", "--out", "{tmp}/o"], "smaller than the number of blocks"),
    (["prune", "--model", "{ckpt}", "--remove", "0", "--out", "{tmp}/o"], "at least 1"),
    (["prune", "--model", "{ckpt}", "--ratio", "1.5", "--out", "{tmp}/o"], "strictly between 0 and 1"),
    (["prune", "--model", "{ckpt}", "--method", "magic", "--remove", "1", "--out", "{tmp}/o"], "unknown method"),
    (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--seq-len", "100000"], "exceeds the model's context"),
    (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--data", "{short}", "--seq-len", "64"], "fewer than one window"),
    (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{ckpt}", "--overwrite"], "overwrite the input model"),
    (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--data", "{tmp}/none.txt", "--seq-len", "64"], "data file not found"),
    (["prune", "--model", "{ckpt}", "--method", "liar", "--out", "{tmp}/o"], "needs --ffn-ratio R and/or --head-ratio"),
    (["prune", "--model", "{ckpt}", "--method", "liar", "--ffn-ratio", "1", "--out", "{tmp}/o"], "must be in [0, 1)"),
    (["prune", "--model", "{ckpt}", "--method", "liar", "--ffn-ratio", "0.5", "--criterion", "x", "--out", "{tmp}/o"], "unknown criterion"),
    (["scan", "--model", "{ckpt}", "--metric", "nope", "--out", "{tmp}/o/scan.json"], "unknown metric"),
    (["eval", "--model", "{tmp}/x.gguf", "--ppl", "builtin"], "GGUF file not found"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_checkpoint, tmp_path, capsys, argv, message):
    (tmp_path / "short.txt").write_text("too short for a window")
    argv = [a.format(tmp=tmp_path, ckpt=tiny_checkpoint, short=tmp_path / "short.txt") for a in argv]
    before = sorted(p.name for p in tiny_checkpoint.iterdir())
    code, stdout, stderr = run(capsys, *argv, "--quiet")
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in tiny_checkpoint.iterdir()) == before


def test_console_script_exit_code_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "prunekit.cli", "eval", "--model", str(tmp_path / "missing")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "model not found" in result.stderr


def test_liar_width_pruning_from_the_command_line(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "narrow"
    code, stdout, _ = run(capsys, "prune", "--model", tiny_checkpoint, "--method", "liar", "--ffn-ratio", 0.25, "--head-ratio", 0.5,
                          "--criterion", "fluctuation", "--out", out, "--compare", "--eval-windows", 2, "--eval-seq-len", 32, *CALIB)
    assert code == 0 and "FFN channels 128 -> 96" in stdout
    plan = json.loads((out / "prunekit_plan.json").read_text())
    assert plan["method"] == "liar" and len(plan["layers"]) == 4 and len(plan["layers"][0]["kept_channels"]) == 96
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.intermediate_size == 96 and model.config.mlp_bias
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 1) and model.config.attention_bias
