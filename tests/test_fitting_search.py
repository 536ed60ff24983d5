"""`prunekit fit` end to end on a tiny checkpoint, through the command line: the chosen file meets the target by
measurement, the report sets it beside the dense ladder and the baselines, and its recipe replays to the same model;
bad targets are refused in one line before anything is written."""

import json
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import torch
from safetensors.torch import load_file

from prunekit.cli import main

from conftest import tiny_bert, tiny_model

pytestmark = pytest.mark.skipif(pytest.importorskip("llama_cpp") is None, reason="llama.cpp")


def run(capsys, *argv):
    code = main([str(a) for a in argv] + ["--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    keys = sorted(topics)
    (folder / "calibration.txt").write_text("\n".join(topics[k] for k in keys[:60]))
    (folder / "heldout.txt").write_text("\n".join(topics[k] for k in keys[60:120]))
    return folder


def fit_args(checkpoint, texts, out: Path, *targets):
    return [
        "fit", "--model", checkpoint, *targets, "--data", texts / "calibration.txt", "--heldout-data", texts / "heldout.txt",
        "--windows", 8, "--seq-len", 32, "--heldout-windows", 4, "--types", "q8_0,q4_0", "--candidates", 2,
        "--out", out / "model", "--gguf", out / "model.gguf", "--library", out / "library",
    ]  # fmt: skip


def test_fit_meets_its_budget_and_replays(capsys, tiny_checkpoint, texts, tmp_path):
    code, out, err = run(capsys, *fit_args(tiny_checkpoint, texts, tmp_path, "--max-bytes", "200KB"))
    assert code == 0, err
    report = json.loads((tmp_path / "model" / "fit_report.json").read_text())
    chosen = next(c for c in report["contenders"] if c["name"] == report["chosen"])
    assert chosen["meets"] and chosen["bytes"] <= 200_000
    assert (tmp_path / "model.gguf").stat().st_size == chosen["bytes"]
    kinds = {c["kind"] for c in report["contenders"]}
    assert {"dense", "candidate"} <= kinds and kinds & {"shortgpt", "liar-uniform"}
    assert (tmp_path / "model" / "fit_report.md").is_file() and (tmp_path / "model" / "fit_pareto.png").is_file()
    assert "chosen:" in out
    if chosen["kind"] != "dense":
        recipe = tmp_path / "model" / "fit_recipe.json"
        code, _, err = run(
            capsys, "prune", "--model", tiny_checkpoint, "--recipe", recipe, "--data", texts / "calibration.txt",
            "--windows", 8, "--seq-len", 32, "--out", tmp_path / "replayed",
        )  # fmt: skip
        assert code == 0, err
        a, b = load_file(tmp_path / "model" / "model.safetensors"), load_file(tmp_path / "replayed" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a new target re-solves from the cached library and measurements
    second_args = fit_args(tiny_checkpoint, texts, tmp_path / "second", "--max-params", "0.8")
    second_args[second_args.index("--library") + 1] = tmp_path / "library"
    code, _, err = run(capsys, *second_args)
    assert code == 0, err
    second = json.loads((tmp_path / "second" / "model" / "fit_report.json").read_text())
    assert second["library"]["resumed_layers"] == 4 and second["timings"]["solve_s"] < 10


@pytest.mark.parametrize(
    "targets, flag",
    [
        (["--max-bytes", "80 furlongs"], "--max-bytes"),
        (["--max-params", "150%"], "--max-params"),
        (["--min-speedup", "0.5"], "--min-speedup"),
        ([], "--max-bytes"),
        (["--max-bytes", "1KB"], "--max-bytes"),  # no structure reaches it
        (["--max-bytes", "100KB", "--types", "q9_9"], "--types"),
    ],
)
def test_bad_targets_are_refused_in_one_line(capsys, tiny_checkpoint, texts, tmp_path, targets, flag):
    args = fit_args(tiny_checkpoint, texts, tmp_path, *targets)
    if "--types" in targets:
        position = args.index("--types")
        del args[position : position + 2]
        args += ["--types", targets[-1]]
        args = [a for a in args]
    code, _, err = run(capsys, *args)
    assert code == 2 and flag in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "model").exists() and not (tmp_path / "model.gguf").exists()


def test_an_encoder_is_refused(capsys, texts, tmp_path):
    tiny_bert().save_pretrained(tmp_path / "bert")
    code, _, err = run(capsys, *fit_args(tmp_path / "bert", texts, tmp_path, "--max-bytes", "10MB"))
    assert code == 2 and "encoder" in err and not (tmp_path / "model").exists()


def test_a_family_without_a_gguf_form_is_refused(capsys, tiny_tokenizer, texts, tmp_path):
    model = tiny_model("gemma2")
    model.save_pretrained(tmp_path / "gemma2")
    tiny_tokenizer.save_pretrained(tmp_path / "gemma2")
    code, _, err = run(capsys, *fit_args(tmp_path / "gemma2", texts, tmp_path, "--max-bytes", "10MB"))
    assert code == 2 and "--model" in err and "gemma2" in err and not (tmp_path / "model").exists()


def test_a_family_whose_gguf_form_reads_one_width_gets_uniform_candidates(capsys, tiny_tokenizer, texts, tmp_path):
    """Gemma-3's llama.cpp form reads one FFN width for all layers: the candidates drop blocks and narrow every kept FFN alike."""
    model = tiny_model("gemma3_text")
    model.save_pretrained(tmp_path / "gemma3")
    tiny_tokenizer.save_pretrained(tmp_path / "gemma3")
    code, _, err = run(capsys, *fit_args(tmp_path / "gemma3", texts, tmp_path, "--max-params", "0.7"))
    assert code == 0, err
    report = json.loads((tmp_path / "model" / "fit_report.json").read_text())
    candidates = [c for c in report["contenders"] if c["kind"] == "candidate"]
    assert candidates and report["library"]["kv_groups"] == []
    for candidate in candidates:
        kept = {tuple(layer) for layer in candidate["structure"] if layer[0] > 0}
        assert (
            len(kept) == 1 and candidate["params"] == candidate["predicted_params"] and candidate["bytes"] == candidate["predicted_bytes"]
        )
