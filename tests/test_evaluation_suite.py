"""Zero-shot tasks from local files, multilingual perplexity, speed, and the report, on tiny models."""

import json

import pytest

from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.evaluation.multilingual import language_ratios, multilingual_perplexity
from prunekit.evaluation.speed import measure_speed
from prunekit.evaluation.tasks import LOCAL_TASKS, check_task_names, local_task_spec, run_tasks

from conftest import tiny_model

pytest.importorskip("lm_eval")


def write_local_tasks(root):
    """Two items per task, in the layout and formats of prunekit's shared data folder."""
    (root / "piqa").mkdir(parents=True)
    (root / "piqa" / "valid.jsonl").write_text(
        '{"goal": "open a jar", "sol1": "twist the lid", "sol2": "eat the lid"}\n'
        '{"goal": "dry hair", "sol1": "use a towel", "sol2": "use soup"}\n'
    )
    (root / "piqa" / "valid-labels.lst").write_text("0\n0\n")
    (root / "arc_easy").mkdir()
    arc = {"id": "q1", "question": "What is warm?", "choices": {"text": ["sun", "ice", "snow"], "label": ["A", "B", "C"]}, "answerKey": "A"}
    (root / "arc_easy" / "ARC-Easy-test.jsonl").write_text(
        json.dumps(arc) + "\n" + json.dumps({**arc, "id": "q2", "answerKey": "B"}) + "\n"
    )
    (root / "hellaswag").mkdir()
    (root / "hellaswag" / "hellaswag_val_full.txt").write_text(
        "Cooking: a man [step] cuts bread\n1\nand eats.\nwith a knife.\nslowly.\nthen sleeps.\n" * 2
    )
    (root / "boolq").mkdir()
    (root / "boolq" / "boolq.jsonl").write_text(
        json.dumps({"query": "Passage: The sky is blue.\nQuestion: is the sky blue?", "choices": ["no", "yes"], "gold": 1}) + "\n"
    )
    (root / "winogrande").mkdir()
    (root / "winogrande" / "w.jsonl").write_text(
        json.dumps(
            {"context_options": ["Ann gave Bo a gift because Ann", "Ann gave Bo a gift because Bo"], "continuation": "was kind.", "gold": 0}
        )
        + "\n"
    )
    (root / "openbookqa").mkdir()
    (root / "openbookqa" / "test.tsv").write_text(
        "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
        "1\tFog is likely around:\t(A) a marsh (B) a desert\tFog is likely around: (A) a marsh (B) a desert\tA\n"
        "2\tIce is\t(A) hot (B) cold (C) loud\tIce is (A) hot (B) cold (C) loud\tB\n"
    )
    (root / "lambada").mkdir()
    (root / "lambada" / "l.jsonl").write_text(json.dumps({"context": "The cat sat on the", "continuation": "mat"}) + "\n")


def test_local_files_convert_to_lm_eval_schemas(tmp_path):
    write_local_tasks(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    for name in ("piqa", "hellaswag", "boolq", "lambada_openai", "openbookqa"):
        spec = local_task_spec(name, tmp_path / "data", work)
        first = json.loads(open(spec["dataset_kwargs"]["data_files"]["test"]).readline())
        assert spec["task"] == name and spec["metric_list"] == LOCAL_TASKS[name].config["metric_list"]
        if name == "piqa":
            assert first == {"goal": "open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0}
        if name == "hellaswag":
            assert first["query"] == "Cooking: a man cuts bread" and first["label"] == 1 and len(first["choices"]) == 4
        if name == "boolq":
            assert first == {"passage": "The sky is blue.", "question": "is the sky blue", "label": 1}
        if name == "lambada_openai":
            assert first == {"text": "The cat sat on the mat"}
        if name == "openbookqa":
            assert first["choices"] == {"text": ["a marsh", "a desert"], "label": ["A", "B"]} and first["answerKey"] == "A"


def test_all_local_tasks_run_through_lm_eval(tmp_path, tiny_tokenizer):
    write_local_tasks(tmp_path)
    names = ["piqa", "arc_easy", "hellaswag", "boolq", "winogrande", "lambada_openai", "openbookqa"]
    results = run_tasks(tiny_model("llama"), tiny_tokenizer, names, data_dir=tmp_path, batch_size=2, item_scores=True)
    assert set(results) == set(names)
    for name, values in results.items():
        assert 0.0 <= values["acc"] <= 1.0 and values["seconds"] > 0 and values["source"] == "local"
        items = values["item_scores"]["acc"]  # one score per item, averaging to the task's accuracy
        assert len(items) == values["items"] and sum(items) / len(items) == pytest.approx(values["acc"])
    assert "acc_norm" in results["piqa"] and "acc_norm" not in results["boolq"]
    assert results["lambada_openai"]["perplexity"] > 1


def test_unknown_tasks_suggest_close_matches():
    with pytest.raises(PrunekitError, match="unknown task 'piqaa'; did you mean piqa"):
        check_task_names(["piqaa"], local=True)
    with pytest.raises(PrunekitError, match="arc_easy"):
        check_task_names(["arc_eassy"], local=False)


def test_missing_task_folder_is_reported(tmp_path, tiny_tokenizer):
    with pytest.raises(PrunekitError, match="needs the folder"):
        run_tasks(tiny_model("llama"), tiny_tokenizer, ["piqa"], data_dir=tmp_path)


def test_multilingual_perplexity_per_language(tmp_path, tiny_tokenizer):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "eng_Latn.dev").write_text("The cat sat on the mat.\n" * 40)
    (tmp_path / "dev" / "deu_Latn.dev").write_text("Die Katze sass auf der Matte.\n" * 40)
    dense = multilingual_perplexity(tiny_model("llama"), tiny_tokenizer, tmp_path, seq_len=32, progress=False)
    other = multilingual_perplexity(tiny_model("llama", seed=3), tiny_tokenizer, tmp_path, seq_len=32, progress=False)
    assert set(dense) == {"eng_Latn", "deu_Latn"}
    ratios = language_ratios(other, dense)
    assert set(ratios) == set(dense) and all(r > 0 for r in ratios.values())
    with pytest.raises(PrunekitError, match="not in"):
        multilingual_perplexity(tiny_model("llama"), tiny_tokenizer, tmp_path, languages=["fra_Latn"])


def test_speed_reports_prefill_decode_and_sizes():
    model = tiny_model("qwen2")
    speed = measure_speed(model, prompt_tokens=16, new_tokens=4, repeats=1)
    assert speed.prefill_tokens_per_second > 0 and speed.decode_tokens_per_second > 0
    assert speed.weight_bytes == 4 * sum(p.numel() for p in model.parameters())
    assert speed.peak_memory_bytes > 0 and speed.disk_bytes is None


def test_eval_out_and_report_end_to_end(tiny_checkpoint, tmp_path, capsys):
    write_local_tasks(tmp_path / "data")
    pruned = tmp_path / "pruned"
    common = [
        "--ppl",
        "builtin",
        "--seq-len",
        "32",
        "--windows",
        "2",
        "--tasks",
        "piqa,arc_easy",
        "--data-dir",
        str(tmp_path / "data"),
        "--speed",
        "--quiet",
    ]
    assert (
        main(
            [
                "prune",
                "--model",
                str(tiny_checkpoint),
                "--remove",
                "1",
                "--out",
                str(pruned),
                "--windows",
                "2",
                "--seq-len",
                "32",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["eval", "--model", str(tiny_checkpoint), *common, "--out", str(tmp_path / "dense.json"), "--label", "dense"]) == 0
    assert main(["eval", "--model", str(pruned), *common, "--out", str(tmp_path / "pruned.json")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "dense.json"), str(tmp_path / "pruned.json"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| piqa | acc |" in report and "params / baseline" in report and "prefill tok/s" in report
    for name in ("report.html", "tasks.png", "perplexity.png", "importance-2.png"):
        assert (tmp_path / "report" / name).is_file(), name
    assert json.loads((tmp_path / "pruned.json").read_text())["plan"]["method"] == "shortgpt"
    code = main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "r2")])
    assert code == 2 and "results file not found" in capsys.readouterr().err


def test_report_shows_language_ratios_against_the_baseline(tmp_path):
    from prunekit.reporting import write_report

    def result(label, blocks, eng, deu):
        return {
            "label": label,
            "model": label,
            "blocks": blocks,
            "parameters": blocks * 10,
            "multilingual": {"eng_Latn": {"perplexity": eng}, "deu_Latn": {"perplexity": deu}},
        }

    paths = write_report([result("pruned", 3, 20.0, 60.0), result("dense", 4, 10.0, 20.0)], tmp_path / "r")
    markdown = paths["markdown"].read_text()
    assert "| deu_Latn | 60.00 | 20.00 | 3.00 |" in markdown and "| eng_Latn | 20.00 | 10.00 | 2.00 |" in markdown
    assert (tmp_path / "r" / "languages.png").is_file()
    assert "<table>" in paths["html"].read_text()
