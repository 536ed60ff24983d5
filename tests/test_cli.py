import argparse
import json
import signal
import subprocess
import sys

import pytest
import torch
import transformers

from prunekit import cli
from prunekit.cli import main
from prunekit.commands import report as report_command

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
    code, stdout, _ = run(
        capsys,
        "prune",
        "--model",
        tiny_checkpoint,
        "--method",
        method,
        "--remove",
        2,
        "--out",
        out,
        "--compare",
        "--eval-windows",
        2,
        "--eval-seq-len",
        32,
        *CALIB,
    )
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
    code, stdout, _ = run(
        capsys, "eval", "--model", tiny_checkpoint, "--ppl", "builtin", "--seq-len", 32, "--windows", 3, "--json", "--quiet"
    )
    payload = json.loads(stdout)
    result = payload["perplexity"]["builtin"]
    assert code == 0 and result["windows"] == 3 and result["perplexity"] > 1 and payload["blocks"] == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prune", "--model", "{tmp}/missing", "--remove", "1", "--out", "{tmp}/o"], "model not found"),
        (["prune", "--model", "{ckpt}", "--remove", "4", "--out", "{tmp}/o"], "smaller than the number of blocks"),
        (["prune", "--model", "{ckpt}", "--remove", "0", "--out", "{tmp}/o"], "at least 1"),
        (["prune", "--model", "{ckpt}", "--ratio", "1.5", "--out", "{tmp}/o"], "strictly between 0 and 1"),
        (["prune", "--model", "{ckpt}", "--method", "magic", "--remove", "1", "--out", "{tmp}/o"], "--method 'magic' is unknown"),
        (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--seq-len", "100000"], "exceeds the model's context"),
        (
            ["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--data", "{short}", "--seq-len", "64"],
            "fewer than one window",
        ),
        (["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{ckpt}", "--overwrite"], "is the input"),
        (
            ["prune", "--model", "{ckpt}", "--remove", "1", "--out", "{tmp}/o", "--data", "{tmp}/none.txt", "--seq-len", "64"],
            "data file not found",
        ),
        (["prune", "--model", "{ckpt}", "--method", "liar", "--out", "{tmp}/o"], "or --ffn-ratio and/or --head-ratio"),
        (["prune", "--model", "{ckpt}", "--method", "liar", "--ffn-ratio", "1", "--out", "{tmp}/o"], "must be in [0, 1)"),
        (
            ["prune", "--model", "{ckpt}", "--method", "liar", "--ffn-ratio", "0.5", "--criterion", "x", "--out", "{tmp}/o"],
            "--criterion 'x' is unknown",
        ),
        (
            ["prune", "--model", "{ckpt}", "--method", "liar", "--ffn-ratio", "0.5", "--damping", "lots", "--out", "{tmp}/o"],
            "neither a number nor 'auto'",
        ),
        (["scan", "--model", "{ckpt}", "--metric", "nope", "--out", "{tmp}/o/scan.json"], "--metric 'nope' is unknown"),
        (["eval", "--model", "{tmp}/x.gguf", "--ppl", "builtin"], "GGUF file not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_checkpoint, tmp_path, capsys, argv, message):
    (tmp_path / "short.txt").write_text("too short for a window")
    argv = [a.format(tmp=tmp_path, ckpt=tiny_checkpoint, short=tmp_path / "short.txt") for a in argv]
    before = sorted(p.name for p in tiny_checkpoint.iterdir())
    code, stdout, stderr = run(capsys, *argv, "--quiet")
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in tiny_checkpoint.iterdir()) == before


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_that_a_library_reports_as_its_own_error_still_exits_with_the_signals_code(tmp_path, capsys, monkeypatch, sig, code):
    # transformers' lazy imports can turn an interrupted import into "Could not import module ..."
    def interrupted_load(args):
        try:
            signal.raise_signal(sig)
        except KeyboardInterrupt as interrupt:
            raise cli.PrunekitError("cannot load model 'x': Could not import module 'LlamaForCausalLM'") from interrupt
        raise AssertionError("the signal did not arrive")

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(report_command, "cmd_report", interrupted_load)
    try:
        returned, _, stderr = run(capsys, "report", str(tmp_path / "r.json"), "--out", str(tmp_path / "o"))
        assert returned == code and "no partial output was written" in stderr and "cannot load" not in stderr
        returned, _, stderr = run(capsys, "eval", "--model", str(tmp_path / "missing"))
        assert returned == 2 and "model not found" in stderr  # the next run in this process is not taken for a signal
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_console_script_exit_code_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "prunekit.cli", "eval", "--model", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "model not found" in result.stderr


def test_liar_width_pruning_from_the_command_line(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "narrow"
    code, stdout, _ = run(
        capsys,
        "prune",
        "--model",
        tiny_checkpoint,
        "--method",
        "liar",
        "--ffn-ratio",
        0.25,
        "--head-ratio",
        0.5,
        "--criterion",
        "fluctuation",
        "--out",
        out,
        "--compare",
        "--eval-windows",
        2,
        "--eval-seq-len",
        32,
        *CALIB,
    )
    assert code == 0 and "FFN channels 128 -> 96" in stdout
    plan = json.loads((out / "prunekit_plan.json").read_text())
    layers = plan["stages"][0]["details"]["layers"]
    assert plan["method"] == "liar" and len(layers) == 4 and len(layers[0]["kept_channels"]) == 96
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.intermediate_size == 96 and model.config.mlp_bias
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 1) and model.config.attention_bias


RECOVERY = ["--recovery-tokens", 64, "--recovery-seq-len", 16, "--grad-accumulation", 1, "--heldout-windows", 1]


def test_prune_iterabre_writes_checkpoint_plan_and_run_log(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, stderr = run(
        capsys,
        "prune",
        "--model",
        tiny_checkpoint,
        "--method",
        "iterabre",
        "--target-blocks",
        2,
        "--protect-ends",
        "--recovery-data",
        "builtin",
        *RECOVERY,
        "--out",
        out,
        *CALIB,
    )
    assert code == 0, stderr
    plan = json.loads((out / "prunekit_plan.json").read_text())
    details = plan["stages"][0]["details"]
    assert plan["method"] == "iterabre" and plan["removed_blocks"] == [1, 2] and len(details["steps"]) == 3
    # by default the iterations only re-score and remove; the whole budget recovers every block at the end
    budgets = [step["recovery"]["tokens_budget"] for step in details["steps"]]
    assert details["recovery"]["tokens"] == 64 and budgets == [0, 0, 64] and details["steps"][-1]["final"]
    state = json.loads((tmp_path / "pruned.iterabre-run" / "state.json").read_text())
    assert state["status"] == "finished" and "iterabre: removed blocks" in stdout
    assert transformers.AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2
    # the same run again is refused unless resumed or overwritten; an iterabre plan cannot be re-applied
    code, _, stderr = run(
        capsys,
        "prune",
        "--model",
        tiny_checkpoint,
        "--method",
        "iterabre",
        "--remove",
        1,
        *RECOVERY,
        "--out",
        tmp_path / "other",
        "--run-dir",
        tmp_path / "pruned.iterabre-run",
        *CALIB,
    )
    assert code == 2 and "--resume" in stderr
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--plan", out, "--out", tmp_path / "again", "--quiet")
    assert code == 2 and "cannot be re-applied" in stderr


def test_prune_iterabre_with_self_generated_data_resumes_a_finished_run(tiny_checkpoint, tmp_path, capsys):
    args = ["prune", "--model", tiny_checkpoint, "--method", "iterabre", "--remove", 1, *RECOVERY, "--run-dir", tmp_path / "run", *CALIB]
    assert run(capsys, *args, "--out", tmp_path / "a")[0] == 0
    assert (tmp_path / "run" / "recovery_data.safetensors").is_file()
    assert run(capsys, *args, "--out", tmp_path / "b", "--resume")[0] == 0
    a = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--remove", 4], "must be smaller"),
        (["--target-blocks", 0], "--target-blocks"),
        (["--remove", 1, "--recovery-tokens", 0], "--recovery-tokens"),
        (["--remove", 1, "--scope", "some"], "scope"),
        (["--remove", 1, "--metric", "nope"], "metric"),
        ([], "--remove or --ratio: give exactly one"),
    ],
)
def test_prune_iterabre_bad_input_is_one_line_and_writes_nothing(tiny_checkpoint, tmp_path, capsys, extra, message):
    out = tmp_path / "pruned"
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--method", "iterabre", *extra, "--out", out, *CALIB)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "pruned.iterabre-run").exists()


def test_recover_distils_a_teacher_into_a_pruned_checkpoint(tiny_checkpoint, tmp_path, capsys):
    pruned, recovered = tmp_path / "pruned", tmp_path / "recovered"
    assert run(capsys, "prune", "--model", tiny_checkpoint, "--remove", 1, "--out", pruned, *CALIB)[0] == 0
    code, stdout, stderr = run(
        capsys,
        "recover",
        "--model",
        pruned,
        "--teacher",
        tiny_checkpoint,
        "--recovery-data",
        "builtin",
        *RECOVERY,
        "--scope",
        "lora",
        "--out",
        recovered,
        "--quiet",
    )
    assert code == 0, stderr
    assert "held-out perplexity" in stdout
    log = json.loads((recovered / "prunekit_recovery.json").read_text())
    assert log["tokens"] == 64 and log["config"]["scope"] == "lora" and log["heldout_perplexity_after"] > 0
    plan = json.loads((recovered / "prunekit_plan.json").read_text())
    assert [s["method"] for s in plan["stages"]] == ["shortgpt", "recover"] and plan["stages"][-1]["details"]["tokens"] == 64
    assert transformers.AutoModelForCausalLM.from_pretrained(recovered).config.num_hidden_layers == 3
    code, _, stderr = run(capsys, "recover", "--model", pruned, "--recovery-data", "self", "--out", tmp_path / "x", "--quiet")
    assert code == 2 and "--teacher" in stderr and not (tmp_path / "x").exists()
    code, _, stderr = run(capsys, "recover", "--model", pruned, "--out", pruned, "--overwrite", "--recovery-data", "builtin", "--quiet")
    assert code == 2 and "input" in stderr


def test_prune_flexigpt_saves_shared_blocks_that_prunekit_reloads_identically(tiny_checkpoint, tmp_path, capsys, ids):
    from prunekit import load_model

    out = tmp_path / "flexi"
    code, stdout, stderr = run(
        capsys,
        "prune",
        "--model",
        tiny_checkpoint,
        "--method",
        "flexigpt",
        "--remove",
        2,
        "--rank",
        4,
        "--recovery-data",
        "builtin",
        *RECOVERY,
        "--out",
        out,
        *CALIB,
    )
    assert code == 0, stderr
    plan = json.loads((out / "prunekit_plan.json").read_text())
    details = plan["stages"][0]["details"]
    assert plan["method"] == "flexigpt" and len(details["replaced_blocks"]) == 2 and details["recovery"]["tokens"] == 64
    assert plan["params_after"] < plan["params_before"] and "shared blocks" in stdout
    loaded = load_model(str(out), device="cpu")
    assert loaded.adapter.num_blocks == 4
    code, _, stderr = run(capsys, "eval", "--model", out, "--ppl", "builtin", "--seq-len", 32, "--windows", 1, "--quiet")
    assert code == 0, stderr
    with pytest.raises(OSError):
        transformers.AutoModelForCausalLM.from_pretrained(out)  # no plain weights: fails loudly, never random blocks


def test_flexigpt_merge_writes_a_plain_checkpoint(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "merged"
    code, _, stderr = run(
        capsys,
        "prune",
        "--model",
        tiny_checkpoint,
        "--method",
        "flexigpt",
        "--remove",
        1,
        "--output-norm",
        "none",
        "--merge",
        "--recovery-tokens",
        0,
        "--out",
        out,
        *CALIB,
    )
    assert code == 0, stderr
    assert transformers.AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4
    code, _, stderr = run(
        capsys, "prune", "--model", tiny_checkpoint, "--method", "flexigpt", "--remove", 1, "--merge", "--out", tmp_path / "refused", *CALIB
    )
    assert code == 2 and "--output-norm none" in stderr and not (tmp_path / "refused").exists()


def test_extend_grows_the_model_and_reloads(tiny_checkpoint, tmp_path, capsys):
    from prunekit import load_model

    out = tmp_path / "deeper"
    code, stdout, stderr = run(
        capsys,
        "extend",
        "--model",
        tiny_checkpoint,
        "--to-blocks",
        6,
        "--pattern",
        "sequential",
        "--rank",
        4,
        "--recovery-data",
        "builtin",
        *RECOVERY[:-2],
        "--out",
        out,
        "--quiet",
    )
    assert code == 0, stderr
    assert "4 -> 6 blocks" in stdout
    model = load_model(str(out), device="cpu").model
    assert model.config.num_hidden_layers == 6
    plan = json.loads((out / "prunekit_plan.json").read_text())
    recovery = plan["stages"][0]["details"]["recovery"]
    assert recovery["config"]["lm_weight"] == 1.0 and recovery["config"]["kd_weight"] == 0.0
    code, _, stderr = run(
        capsys, "extend", "--model", tiny_checkpoint, "--to-blocks", 3, "--recovery-seq-len", 16, "--out", tmp_path / "x", "--quiet"
    )
    assert code == 2 and "--to-blocks" in stderr


def test_liar_ratio_is_a_share_of_the_block_parameters(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "liar"
    code, _, stderr = run(
        capsys, "prune", "--model", tiny_checkpoint, "--method", "liar", "--ratio", 0.4, "--ratio-heads", "--out", out, *CALIB
    )
    assert code == 0, stderr
    plan = json.loads((out / "prunekit_plan.json").read_text())["stages"][0]["details"]
    assert plan["block_ratio"] == 0.4 and plan["kv_heads_after"] == 1 and plan["intermediate_size_after"] < 128
    code, _, stderr = run(
        capsys, "prune", "--model", tiny_checkpoint, "--method", "liar", "--ratio", 0.4, "--out", tmp_path / "ffn", *CALIB
    )
    plan = json.loads((tmp_path / "ffn" / "prunekit_plan.json").read_text())["stages"][0]["details"]
    assert code == 0 and plan["kv_heads_after"] == 2 and plan["intermediate_size_after"] < 128
    code, _, stderr = run(
        capsys, "prune", "--model", tiny_checkpoint, "--method", "liar", "--ratio", 0.4, "--ffn-ratio", 0.2, "--out", tmp_path / "x", *CALIB
    )
    assert code == 2 and "not both" in stderr


def test_liar_adaptive_widths_from_the_command_line_reload_with_prunekit(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "adaptive"
    code, stdout, stderr = run(
        capsys,
        "prune",
        "--model",
        tiny_checkpoint,
        "--method",
        "liar",
        "--ratio",
        0.3,
        "--allocation",
        "adaptive",
        "--min-keep",
        0.2,
        "--out",
        out,
        *CALIB,
    )
    assert code == 0, stderr
    assert "per-layer widths" in stdout or "FFN channels" in stdout
    plan = json.loads((out / "prunekit_plan.json").read_text())["stages"][0]["details"]
    assert plan["allocation"] == "adaptive" and plan["min_keep"] == 0.2
    code, stdout, stderr = run(capsys, "eval", "--model", out, "--ppl", "builtin", "--windows", 1, "--seq-len", 16, "--quiet")
    assert code == 0, stderr


def test_liar_prunes_a_bert_encoder_from_the_command_line(tmp_path, capsys, bert_tokenizer):
    from prunekit.models.loading import load_model

    from conftest import tiny_bert

    source = tmp_path / "encoder"
    tiny_bert().save_pretrained(source)
    bert_tokenizer.save_pretrained(source)
    out = tmp_path / "encoder-pruned"
    code, stdout, stderr = run(capsys, "prune", "--model", source, "--method", "liar", "--ratio", 0.5, "--out", out, *CALIB)
    assert code == 0, stderr
    assert "heads 4 -> 2" in stdout and "FFN channels 128 -> 64" in stdout
    loaded = load_model(str(out), device="cpu")
    assert loaded.model.config.prunekit_layer_widths["num_attention_heads"] == [2, 2, 2]
    code, _, stderr = run(
        capsys, "prune", "--model", source, "--method", "liar", "--ratio", 0.5, "--allocation", "adaptive", "--out", tmp_path / "x", *CALIB
    )
    assert code == 2 and "must be uniform for encoders" in stderr
    code, _, stderr = run(capsys, "eval", "--model", out, "--ppl", "builtin")
    assert code == 2 and "sentence embeddings" in stderr


def test_liar_statistics_that_cannot_fit_end_in_one_line_with_nothing_written(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from prunekit.methods.liar import decoder as liar

    monkeypatch.setattr(liar, "available_memory_bytes", lambda device: 10_000)
    out = tmp_path / "narrow"
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--method", "liar", "--ffn-ratio", 0.25, "--out", out, *CALIB)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "statistics for 128 channels need" in stderr
    assert not out.exists()


def test_recover_reports_throughput_and_where_it_trained(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "recovered"
    code, stdout, stderr = run(
        capsys,
        "recover",
        "--model",
        tiny_checkpoint,
        "--teacher",
        tiny_checkpoint,
        "--recovery-data",
        "builtin",
        *RECOVERY,
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert code == 0, stderr
    assert "tokens/s on cpu, micro-batch 1" in stdout
    log = json.loads((out / "prunekit_recovery.json").read_text())
    assert log["device"] == "cpu" and log["model_flops_per_token"] > 0 and log["mfu"] is None


def test_text_field_names_where_the_text_of_json_records_is(tiny_checkpoint, tmp_path, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"id": i, "body": "Some words about pruning language models. " * 20}) for i in range(20)))
    scan = ["scan", "--model", tiny_checkpoint, "--data", data, "--windows", 2, "--seq-len", 32, "--quiet"]
    code, _, stderr = run(capsys, *scan, "--out", tmp_path / "a.json")
    assert code == 2 and "no 'text' string" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run(capsys, *scan, "--text-field", "body", "--out", tmp_path / "b.json")
    assert code == 0, stderr
    both = tmp_path / "both.jsonl"  # records with both fields: the named one is read, by every reader
    both.write_text("\n".join(json.dumps({"text": "x " * 300, "body": f"Other words, number {i}. " * 30}) for i in range(20)))
    perplexities = {}
    for field in ("text", "body"):
        code, stdout, stderr = run(
            capsys, "eval", "--model", tiny_checkpoint, "--ppl", both, "--windows", 2, "--seq-len", 32, "--text-field", field, "--json"
        )
        assert code == 0, stderr
        perplexities[field] = json.loads(stdout)["perplexity"][str(both)]["perplexity"]
    assert perplexities["text"] != perplexities["body"]
    train = ["--recovery-data", data, "--recovery-tokens", 64, "--recovery-seq-len", 16, "--grad-accumulation", 1, "--quiet"]
    code, _, stderr = run(capsys, "recover", "--model", tiny_checkpoint, *train, "--text-field", "body", "--out", tmp_path / "r")
    assert code == 0, stderr


def test_plan_flags_that_conflict_and_plans_that_cannot_be_reapplied_are_refused(tiny_checkpoint, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"method": "shortgpt", "removed_blocks": [1], "num_blocks_before": 4}))
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--plan", plan, "--remove", 3, "--out", tmp_path / "o", "--quiet")
    assert code == 2 and "drop --remove" in stderr
    plan.write_text(json.dumps({"method": "liar", "ffn_ratio": 0.2}))
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--plan", plan, "--out", tmp_path / "o", "--quiet")
    assert code == 2 and "a liar plan cannot be re-applied" in stderr and not (tmp_path / "o").exists()
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--method", "magic", "--remove", 1, "--out", tmp_path / "o")
    assert code == 2 and "liar, iterabre, flexigpt, extend" in stderr


@pytest.mark.parametrize("limit", [0, -3])
def test_eval_limits_below_one_item_are_refused(tiny_checkpoint, capsys, limit):
    code, _, stderr = run(capsys, "eval", "--model", tiny_checkpoint, "--limit", limit, "--tasks", "piqa", "--quiet")
    assert code == 2 and "--limit" in stderr and len(stderr.strip().splitlines()) == 1


def test_eval_out_that_is_a_directory_is_refused(tiny_checkpoint, tmp_path, capsys):
    code, _, stderr = run(capsys, "eval", "--model", tiny_checkpoint, "--out", tmp_path, "--overwrite", "--quiet")
    assert code == 2 and "is a directory" in stderr


def test_report_refuses_non_utf8_and_incomplete_results(tmp_path, capsys):
    binary = tmp_path / "a.json"
    binary.write_bytes(b"\xff\xfe{\x00")
    code, _, stderr = run(capsys, "report", binary, "--out", tmp_path / "r")
    assert code == 2 and "not UTF-8" in stderr and len(stderr.strip().splitlines()) == 1
    partial = tmp_path / "b.json"
    partial.write_text(json.dumps({"blocks": 4}))
    code, _, stderr = run(capsys, "report", partial, "--out", tmp_path / "r")
    assert code == 2 and "parameters" in stderr and not (tmp_path / "r").exists()


def test_a_dangling_weights_link_is_named(tiny_checkpoint, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    (broken / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    code, _, stderr = run(capsys, "eval", "--model", broken, "--quiet")
    assert code == 2 and "broken link" in stderr and len(stderr.strip().splitlines()) == 1


def test_a_bad_argument_type_is_one_line_that_points_to_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["prune", "--model", "m", "--remove", "many"])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and len(stderr.strip().splitlines()) == 1
    assert "invalid int value: 'many'" in stderr and "see prunekit prune --help" in stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "shortgpt", "--remove", 1, "--protect", 17], "--protect block(s) 17 not in this model"),
        (["--method", "shortgpt", "--remove", 1, "--batch-size", 0], "--batch-size 0 must be at least 1"),
        (["--method", "flexigpt", "--remove", 1, "--rank", 100000, "--recovery-tokens", 0], "adapter rank 100000 must be between 1 and"),
        (["--method", "liar", "--ffn-ratio", 0], "remove nothing"),
    ],
)
def test_silently_accepted_options_are_refused(tiny_checkpoint, tmp_path, capsys, argv, message):
    out = tmp_path / "o"
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, *argv, "--out", out, *CALIB)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1 and not out.exists()


def test_only_the_main_process_prints_the_summary(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    code, stdout, _ = run(
        capsys, "prune", "--model", tiny_checkpoint, "--method", "shortgpt", "--remove", 1, "--out", tmp_path / "o", *CALIB
    )
    assert code == 0 and stdout == ""


def test_a_command_that_fails_after_claiming_its_output_releases_it(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from prunekit.methods.liar import decoder as liar
    from prunekit.models import export

    monkeypatch.setattr(liar, "available_memory_bytes", lambda device: 10_000)
    code, _, _ = run(capsys, "prune", "--model", tiny_checkpoint, "--method", "liar", "--ffn-ratio", 0.25, "--out", tmp_path / "o", *CALIB)
    assert code == 2 and not export._CLAIMS and not list(tmp_path.glob(".*lock"))


def test_every_config_option_is_a_prune_flag_and_every_method_flag_is_a_config_option():
    import dataclasses

    from prunekit.cli import CONFIGS, build_parser
    from prunekit.methods import RecoveryConfig
    from prunekit.options import flag_of

    prune = build_parser()._subparsers._group_actions[0].choices["prune"]
    flags = {option for action in prune._actions for option in action.option_strings}
    fields = [
        f for cls in (*CONFIGS, RecoveryConfig) for f in dataclasses.fields(cls) if f.name != "recovery" and not f.metadata.get("internal")
    ]
    assert {flag_of(f) for f in fields} <= flags
    generated = {a.dest.removeprefix("recovery.") for a in prune._actions if a.default is argparse.SUPPRESS and a.dest != "help"}
    assert generated <= {f.name for f in fields} and all(f.metadata.get("help") for f in fields)


def test_a_recipe_file_runs_from_the_command_line_and_its_plan_reapplies(tiny_checkpoint, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "- {method: shortgpt, remove: 1}\n- {method: liar, ffn_ratio: 0.25}\n- recover: {tokens: 64, seq_len: 16, grad_accumulation: 1}\n"
    )
    out = tmp_path / "staged"
    code, stdout, stderr = run(
        capsys, "prune", "--model", tiny_checkpoint, "--recipe", recipe, "--recovery-data", "builtin", "--out", out, *CALIB
    )
    assert code == 0, stderr
    plan = json.loads((out / "prunekit_plan.json").read_text())
    assert [s["method"] for s in plan["stages"]] == ["shortgpt", "liar", "recover"] and plan["method"] == "recipe"
    assert "shortgpt: removed blocks" in stdout and "liar: FFN channels 128 -> 96" in stdout and "recover: 64 tokens" in stdout
    code, stdout, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--plan", out, "--out", tmp_path / "again", *CALIB)
    assert code == 0, stderr
    assert "left out stage 'recover'" in stdout
    again = json.loads((tmp_path / "again" / "prunekit_plan.json").read_text())
    assert [s["method"] for s in again["stages"]] == ["shortgpt", "liar"] and again["removed_blocks"] == plan["removed_blocks"]
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--recipe", recipe, "--remove", 2, "--out", tmp_path / "x", *CALIB)
    assert code == 2 and "--recipe decides what is done; drop --remove" in stderr


def test_calibration_windows_default_to_what_the_method_needs_and_the_plan_records_them(tiny_checkpoint, tmp_path, capsys):
    """LIAR's least squares gets 64 windows unless told (16 were too few on Gemma-3, see the README);
    block scores keep 16; --windows overrides both."""
    calib = ["--data", "builtin", "--seq-len", "32", "--quiet"]
    for method, options, expected in (("liar", ["--ffn-ratio", 0.25], 64), ("shortgpt", ["--remove", 1], 16)):
        out = tmp_path / method
        code, _, _ = run(capsys, "prune", "--model", tiny_checkpoint, "--method", method, *options, "--out", out, *calib)
        assert code == 0
        assert json.loads((out / "prunekit_plan.json").read_text())["calibration"]["windows"] == expected
    out = tmp_path / "told"
    code, _, _ = run(
        capsys, "prune", "--model", tiny_checkpoint, "--method", "liar", "--ffn-ratio", 0.25, "--out", out, *calib, "--windows", 3
    )
    assert code == 0 and json.loads((out / "prunekit_plan.json").read_text())["calibration"]["windows"] == 3


def test_a_liar_plan_without_data_reruns_on_the_data_it_recorded(tiny_checkpoint, tmp_path, capsys, caplog):
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(f"word{i % 37} and{i % 11}" for i in range(3000)))
    first = tmp_path / "first"
    options = ["--method", "liar", "--ffn-ratio", 0.25, "--data", text, "--windows", 5, "--seq-len", 24, "--seed", 4, "--quiet"]
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, *options, "--out", first)
    assert code == 0, stderr
    again = tmp_path / "again"
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--plan", first, "--out", again, "--quiet")
    assert code == 0, stderr
    assert "re-running the plan's liar stage on the data it recorded" in caplog.text
    plans = [json.loads((out / "prunekit_plan.json").read_text()) for out in (first, again)]
    assert plans[0]["calibration"] == plans[1]["calibration"] and plans[1]["calibration"]["seed"] == 4
    weights = [(out / "model.safetensors").read_bytes() for out in (first, again)]
    assert weights[0] == weights[1]


def test_zero_calibration_windows_are_refused_not_replaced(tiny_checkpoint, tmp_path, capsys):
    code, _, stderr = run(
        capsys, "prune", "--model", tiny_checkpoint, "--method", "shortgpt", "--remove", 1, "--windows", 0, "--out", tmp_path / "o"
    )
    assert code == 2 and "--windows 0 must be at least 1" in stderr and not (tmp_path / "o").exists()


def test_eval_and_scan_outputs_are_claimed_like_prune_outputs(tiny_checkpoint, tmp_path, capsys):
    import subprocess
    import sys

    held = tmp_path / "r.json"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pathlib import Path; import time; from prunekit.models.export import claim_output; "
            f"claim_output(Path({str(held)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # another run is writing r.json
        for command in (["eval", "--ppl", "builtin", "--windows", 1, "--seq-len", 16], ["scan", "--windows", 1, "--seq-len", 16]):
            code, _, stderr = run(capsys, *command, "--model", tiny_checkpoint, "--out", held)
            assert code == 2 and "another prunekit run is writing" in stderr and not held.exists()
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / ".s.json.prunekit-lock").mkdir()  # a directory where the lock file goes
    code, _, stderr = run(capsys, "eval", "--model", tiny_checkpoint, "--ppl", "builtin", "--windows", 1, "--out", tmp_path / "s.json")
    assert code == 2 and "cannot lock" in stderr and len(stderr.strip().splitlines()) == 1


def test_a_mistyped_flag_names_the_closest_one_and_its_commands_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["prune", "--model", "m", "--out", "o", "--method", "liar", "--ffn_ratio", "0.2"])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and len(stderr.strip().splitlines()) == 1
    assert "unrecognized argument --ffn_ratio; did you mean --ffn-ratio?" in stderr and "see prunekit prune --help" in stderr
    with pytest.raises(SystemExit):
        main(["eval", "--model", "m", "--zzz"])
    assert "unrecognized argument --zzz (see prunekit eval --help)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, flag",
    [
        (["prune", "--method", "shortgpt", "--remove", 1, "--seq-len", 100000], "--seq-len 100000"),
        (["prune", "--method", "shortgpt", "--remove", 1, "--seq-len", 32, "--compare", "--eval-seq-len", 100000], "--eval-seq-len 100000"),
        (["prune", "--method", "iterabre", "--remove", 1, "--seq-len", 32, "--recovery-seq-len", 100000], "--recovery-seq-len 100000"),
        (
            ["prune", "--method", "shortgpt", "--remove", 1, "--seq-len", 32, "--recovery-tokens", 64, "--recovery-seq-len", 100000],
            "--recovery-seq-len 100000",
        ),
        (["eval", "--seq-len", 100000], "--seq-len 100000"),
    ],
)
def test_a_window_longer_than_the_model_names_its_own_flag(tiny_checkpoint, tmp_path, capsys, args, flag):
    out = ["--out", tmp_path / "o"] if args[0] == "prune" else []
    code, _, stderr = run(capsys, args[0], "--model", tiny_checkpoint, *args[1:], *out, "--quiet")
    assert code == 2 and stderr.strip() == f"prunekit: error: {flag} exceeds the model's context of 256 tokens; use a shorter window"


def test_each_recipe_stage_takes_the_calibration_windows_its_method_asks_for(tiny_checkpoint, tmp_path, capsys):
    """ShortGPT inside a recipe with LIAR scores the 16 windows ShortGPT alone would, not LIAR's 64."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("- {method: shortgpt, remove: 1}\n- {method: liar, ffn_ratio: 0.25}\n")
    calib = ["--data", "builtin", "--seq-len", "32", "--quiet"]
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--recipe", recipe, "--out", tmp_path / "r", *calib)
    assert code == 0, stderr
    plan = json.loads((tmp_path / "r" / "prunekit_plan.json").read_text())
    assert plan["calibration"]["windows"] == 64
    assert [stage["details"]["data"]["windows"] for stage in plan["stages"]] == [16, 64]
    alone = tmp_path / "alone"
    code, _, _ = run(capsys, "prune", "--model", tiny_checkpoint, "--method", "shortgpt", "--remove", 1, "--out", alone, *calib)
    assert code == 0
    assert (
        json.loads((alone / "prunekit_plan.json").read_text())["stages"][0]["details"]["scores"] == plan["stages"][0]["details"]["scores"]
    )
    code, _, _ = run(capsys, "prune", "--model", tiny_checkpoint, "--recipe", recipe, "--out", tmp_path / "told", *calib, "--windows", 8)
    told = json.loads((tmp_path / "told" / "prunekit_plan.json").read_text())
    assert code == 0 and [stage["details"]["data"]["windows"] for stage in told["stages"]] == [8, 8]
    recipe.write_text("- {method: shortgpt, remove: 1, windows: 4}\n- {method: liar, ffn_ratio: 0.25, windows: 80}\n")
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--recipe", recipe, "--out", tmp_path / "own", *calib)
    own = json.loads((tmp_path / "own" / "prunekit_plan.json").read_text())
    assert code == 0, stderr
    assert own["calibration"]["windows"] == 80 and [stage["details"]["data"]["windows"] for stage in own["stages"]] == [4, 80]
    recipe.write_text("- {method: shortgpt, remove: 1, windows: 0}\n")
    code, _, stderr = run(capsys, "prune", "--model", tiny_checkpoint, "--recipe", recipe, "--out", tmp_path / "zero", *calib)
    assert code == 2 and "--windows 0 must be at least 1 (calibration windows of the stage)" in stderr


def test_library_warnings_and_log_lines_name_flags_on_the_command_line(monkeypatch):
    """The library names parameters (`tokens`); on the command line its warnings and log lines name flags."""
    import io
    import logging
    import os
    import warnings

    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *rest, **kw: shown.append(str(message)))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        cli._speak_in_flags()
        logging.getLogger("prunekit.recovery.trainer").warning("pass more data for a larger `tokens` (%d windows)", 3)
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue() == "pass more data for a larger --recovery-tokens (3 windows)\n"
    inside = os.path.join(cli.PACKAGE_DIRECTORY, "methods", "liar", "decoder.py")
    warnings.showwarning("round them (`channel_multiple` 64)", UserWarning, inside, 1)
    warnings.showwarning("`channel_multiple` elsewhere", UserWarning, "/elsewhere/code.py", 1)
    assert shown == ["round them (--channel-multiple 64)", "`channel_multiple` elsewhere"]


def test_a_diverged_recovery_fails_with_exit_code_1_and_one_line_naming_the_flag(tiny_checkpoint, tmp_path, capsys):
    """A failed computation on valid input is not a usage error: exit 1, the flag to change, no output left."""
    recovery = [*RECOVERY, "--lr", "1e30", "--max-grad-norm", "0", "--warmup-ratio", "0"]
    out = tmp_path / "recovered"
    code, _, stderr = run(capsys, "recover", "--model", tiny_checkpoint, "--recovery-data", "builtin", *recovery, "--out", out, "--quiet")
    assert code == 1 and "diverged" in stderr and "--lr" in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()
