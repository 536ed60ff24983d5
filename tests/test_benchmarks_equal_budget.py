"""The equal-budget benchmark resumes from the rows an interrupted run finished, refuses to overwrite a
run with other settings, and reports a diverged contender with its learning rate instead of dropping it."""

import json
import time

import pytest

from conftest import load_benchmark


def _module():
    return load_benchmark("equal_budget")


def _evaluation(window_nll, flores=2.0):
    return {
        "wikitext": {"perplexity": 2.718 ** (sum(window_nll) / len(window_nll)), "window_nll": window_nll},
        "tasks": {},
        "flores": {"eng_Latn": {"perplexity": flores}},
        "seconds": {"wikitext": 1.0, "tasks": 0.0, "flores": 1.0},
    }


HEADER = {
    "table": "iterabre",
    "model": "m",
    "remove": 6,
    "budget": 1000,
    "seed": 0,
    "recovery": {"lr": 1e-4},
    "evaluation": {"tasks": ()},  # a tuple in the settings, a list once read back from JSON
    "command": "c",
}


def test_a_run_with_the_same_settings_resumes_and_one_with_other_settings_is_refused(tmp_path):
    equal_budget = _module()
    path = tmp_path / "run.json"
    equal_budget.write_json(tmp_path, "run", {**HEADER, "commit": "abc", "rows": [{"contender": "shortgpt+rec"}]})
    before = path.read_text()
    assert equal_budget._resumed(path, {**HEADER, "command": "again"})["rows"] == [{"contender": "shortgpt+rec"}]
    with pytest.raises(SystemExit, match=r"other settings \(budget, seed\); pass another --name"):
        equal_budget._resumed(path, {**HEADER, "budget": 2000, "seed": 1})
    assert path.read_text() == before  # the finished rows stay
    assert equal_budget._resumed(tmp_path / "new.json", HEADER)["rows"] == []


def test_the_dense_row_is_taken_from_a_table_of_the_same_model_and_evaluation_only(tmp_path, capsys):
    equal_budget = _module()
    dense = {"params": 10, **_evaluation([1.0, 2.0])}
    equal_budget.write_json(tmp_path, "small", {**HEADER, "commit": "abc", "dense": dense, "rows": []})
    taken = equal_budget._dense_from(tmp_path / "small.json", {**HEADER, "budget": 5000, "recovery": {"lr": 3e-4}})
    assert taken["wikitext"] == dense["wikitext"] and taken["copied_from"] == "small (commit abc)"
    with pytest.raises(SystemExit, match=r"other settings \(evaluation\)"):
        equal_budget._dense_from(tmp_path / "small.json", {**HEADER, "evaluation": {"tasks": ["piqa"]}})
    capsys.readouterr()
    with pytest.raises(SystemExit, match="does not exist") as refused:
        equal_budget._dense_from(tmp_path / "none.json", HEADER)
    stderr = capsys.readouterr().err
    assert refused.value.code == 2 and stderr.count("\n") == 1 and ": error: --dense-from:" in stderr  # as prunekit's bad input
    results = {**HEADER, "evaluation": {"wikitext_windows": 2, "tasks": []}, "recovery": {"precision": "bf16", "learning_rate": 1e-4}}
    results.update(commit="def", dense=taken, rows=[])
    assert "the dense row is taken from small (commit abc)" in equal_budget.markdown(results)


def test_the_table_gives_paired_verdicts_and_names_a_diverged_contender():
    equal_budget = _module()
    results = {
        **HEADER,
        "commit": "abc",
        "recovery": {"learning_rate": 1e-4, "precision": "bf16"},
        "evaluation": {"wikitext_windows": 4},
        "dense": _evaluation([3.0, 3.1, 3.2, 3.3], flores=2.0),
        "rows": [
            {"contender": "shortgpt+rec", "removed": [1], "prune_seconds": 5.0, **_evaluation([4.0, 4.1, 4.2, 4.3], 4.0)},
            {"contender": "iterabre", "removed": [2], "prune_seconds": 9.0, **_evaluation([4.5, 4.7, 4.6, 4.9], 6.0)},
            {
                "contender": "angular+rec self-generated",
                "removed": [3],
                "prune_seconds": 8.0,
                "generation_seconds": 40.0,
                **_evaluation([4.0] * 4),
            },
            {"contender": "iterabre lora", "diverged": True, "learning_rate": 1e-3, "step": 7, "prune_seconds": 3.0},
        ],
    }
    table = equal_budget.markdown(results)
    assert "| iterabre | [2] |" in table and "worse" in table and "| 3.00 / 3.00 (eng_Latn) |" in table
    assert "| iterabre lora | diverged at lr 0.001 (step 7) |" in table
    assert "8 + 2 (+ 40 sampling the data, once per run) |" in table
    assert all(line.count("|") == table.splitlines()[3].count("|") for line in table.splitlines()[3:])
    assert "fp32 on CPU (2 cores)" in table  # rows from before the device was recorded, and CPU runs
    assert "fp32 on cuda," in equal_budget.markdown({**results, "evaluation": {"wikitext_windows": 4, "device": "cuda"}})


def test_flores_is_compared_paired_over_every_window_of_every_language():
    module = _module()
    reference = {"flores": {"fra_Latn": {"window_nll": [3.0, 3.2, 3.1]}, "deu_Latn": {"window_nll": [4.0, 4.1, 4.3]}}}
    lower = {
        "flores": {
            lang: {"window_nll": [v - 0.5 + 0.01 * i for i, v in enumerate(d["window_nll"])]} for lang, d in reference["flores"].items()
        }
    }
    assert module.flores_versus(reference, lower).endswith("better")
    assert module.flores_versus(reference, reference).endswith("tie")
    assert module.flores_versus(reference, {"flores": {"fra_Latn": {"perplexity": 2.0}}}) == "-"  # no windows recorded


def test_every_contender_of_every_table_is_a_valid_method_configuration():
    """A misspelt option in a contender would otherwise only fail an hour into a benchmark run."""
    from prunekit.methods.registry import config_from_options
    from prunekit.recovery import RecoveryConfig

    module = _module()
    for table, remove, _ in module.TABLES.values():
        for name, (method, options, overrides, scan_windows, *data) in table.items():
            removal = {"remove": remove} if remove else {}  # the extension table removes nothing
            config_from_options(method, {**removal, **options}, f" (contender '{name}')").check()
            RecoveryConfig(**overrides)
            assert scan_windows in (4, 16), name
            assert data in ([], [module.SELF_GENERATED], [module.WIKITEXT_REST]), name  # C4, sampled, or unscored WikiText-2
    paper_loop = module.ITERABRE_TABLE["iterabre"][1]
    assert paper_loop["metric"] == "removal-cosine" and paper_loop["final_share"] == 0.0


def test_rows_follow_the_order_the_contenders_are_named_in():
    module = _module()
    rows = [{"contender": name} for name in ("a", "b", "c", "d")]
    ordered = module.in_asked_order(rows, ["c", "a"])
    assert [row["contender"] for row in ordered] == ["c", "a", "b", "d"]


def test_each_finished_row_lands_in_the_table_in_the_asked_order_before_the_run_ends(tmp_path):
    module = _module()
    results = {
        **HEADER,
        "commit": "abc",
        "recovery": {"learning_rate": 1e-4, "precision": "bf16"},
        "evaluation": {"wikitext_windows": 4},
        "dense": _evaluation([3.0, 3.1, 3.2, 3.3]),
        "rows": [{"contender": "b", "removed": [2], "prune_seconds": 9.0, **_evaluation([4.5, 4.7, 4.6, 4.9])}],
    }
    module._write(tmp_path, "run", results, ["a", "b"])  # the reference, a, has not finished
    assert "| b | [2] |" in (tmp_path / "run.md").read_text()
    results["rows"].append({"contender": "a", "removed": [1], "prune_seconds": 5.0, **_evaluation([4.0, 4.1, 4.2, 4.3])})
    module._write(tmp_path, "run", results, ["a", "b"])
    table = (tmp_path / "run.md").read_text()
    assert table.index("| a | [1] |") < table.index("| b | [2] |") and "worse" in table
    assert [row["contender"] for row in json.loads((tmp_path / "run.json").read_text())["rows"]] == ["a", "b"]


def test_runs_from_before_streamed_data_resume_and_a_run_on_other_data_is_refused(tmp_path):
    equal_budget = _module()
    path = tmp_path / "run.json"
    equal_budget.write_json(tmp_path, "run", {**HEADER, "commit": "abc", "rows": []})
    assert equal_budget._resumed(path, {**HEADER, "recovery_data": equal_budget.IN_MEMORY})["rows"] == []
    with pytest.raises(SystemExit, match=r"other settings \(recovery_data\)"):
        equal_budget._resumed(path, {**HEADER, "recovery_data": equal_budget.C4_TRAIN})


def test_the_c4_training_shards_leave_out_the_evaluation_documents(tmp_path):
    equal_budget = _module()
    shards = equal_budget.c4_training_shards(tmp_path)
    names = sorted(p.name for p in (tmp_path / "c4-train-shards").iterdir())
    assert shards == str(tmp_path / "c4-train-shards") and names == sorted(equal_budget.C4_TRAIN_FILES)
    assert "c4-validation.00000-of-00008.first1000.jsonl" not in names
    assert equal_budget.slug("iterabre bi final 1.0 lr 3e-4") == "iterabre_bi_final_1.0_lr_3e-4"


def test_a_rows_wall_time_adds_up_over_the_processes_that_ran_it(tmp_path):
    equal_budget = _module()
    first = equal_budget.RowClock(tmp_path / "row", every=0.02)
    time.sleep(0.15)  # killed here: only what was saved counts
    saved = json.loads((tmp_path / "row" / "row_seconds.json").read_text())["seconds"]
    first.stopped.set()
    assert 0.05 < saved <= 0.2
    second = equal_budget.RowClock(tmp_path / "row", every=0.02)
    assert second.before == pytest.approx(saved, abs=0.05) and second.stop() >= saved


def test_a_run_recorded_before_a_recovery_setting_existed_resumes_while_that_setting_keeps_its_default(tmp_path):
    from prunekit.recovery import RecoveryConfig

    equal_budget = _module()
    path = tmp_path / "run.json"
    recorded = {k: v for k, v in RecoveryConfig(tokens=1000).to_dict().items() if k not in ("sharding", "shard_teacher")}
    equal_budget.write_json(tmp_path, "run", {**HEADER, "recovery": recorded, "commit": "abc", "rows": [{"contender": "a"}]})
    now = {**HEADER, "recovery": RecoveryConfig(tokens=1000).to_dict()}
    assert equal_budget._resumed(path, now)["rows"] == [{"contender": "a"}]
    with pytest.raises(SystemExit, match=r"other settings \(recovery\)"):
        equal_budget._resumed(path, {**now, "recovery": RecoveryConfig(tokens=1000, sharding="fsdp").to_dict()})


def test_the_extension_table_shows_blocks_size_on_disk_and_decode_speed():
    equal_budget = _module()
    footprint = {"blocks": 30, "disk_bytes": 538_000_000, "decode_tokens_per_second": 41.25}
    results = {
        **HEADER,
        "table": "extend",
        "remove": 0,
        "commit": "abc",
        "recovery": {"learning_rate": 1e-4, "precision": "bf16"},
        "evaluation": {"wikitext_windows": 4},
        "dense": {**_evaluation([3.0, 3.1, 3.2, 3.3]), "footprint": footprint},
        "rows": [
            {
                "contender": "extend block",
                "prune_seconds": 5.0,
                "footprint": {**footprint, "blocks": 36, "decode_vs_dense": 0.8333},
                **_evaluation([2.9] * 4),
            },
            {"contender": "dense+full", "prune_seconds": 5.0, "footprint": footprint, **_evaluation([2.8, 2.9, 2.8, 2.9])},
            {"contender": "dense+lora", "diverged": True, "learning_rate": 1e-3, "step": 7, "prune_seconds": 3.0},
        ],
    }
    table = equal_budget.markdown(results)
    assert "grown from 30 blocks, or trained as it is" in table and "next-token loss" in table and "removed" not in table
    assert "| contender | blocks |" in table and "| extend block | 36 |" in table and "| dense | 30 |" in table
    assert "| 538.0 | 41.2 (0.83x) |" in table and "| 538.0 | 41.2 |" in table and "disk (MB) | decode tok/s" in table
    assert all(line.count("|") == table.splitlines()[3].count("|") for line in table.splitlines()[3:])


def test_the_header_says_how_often_each_contender_saw_its_training_data():
    equal_budget = _module()
    rows = [
        {"contender": "repeated", "passes": [1.29]},
        {"contender": "streamed", "passes": [None]},  # a stream read less than once has no count
        {"contender": "untrained", "passes": []},
    ]
    text = equal_budget._passes_text(rows)
    assert text == "; passes over the training data: repeated 1.29, streamed under 1"


def test_with_the_datas_size_known_every_row_counts_its_tokens_over_it(tmp_path, tiny_tokenizer):
    equal_budget = _module()
    documents = [f"Document {i} says something about pruning, recovery and number {i * 7}." for i in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    per_pass = equal_budget.tokens_per_pass(str(tmp_path / "docs.jsonl"), tiny_tokenizer, seq_len=16)
    assert per_pass == sum(len(tiny_tokenizer(d, add_special_tokens=False)["input_ids"]) + 1 for d in documents)  # + EOS each
    rows = [
        {"contender": "one-shot", "passes": [1.29], "tokens_trained": 2 * per_pass},
        {"contender": "loop", "passes": [1.0, 1.0]},  # each iteration read its own share of windows drawn into memory once
        {"contender": "untrained", "passes": []},
    ]
    text = equal_budget._passes_text(rows, budget=per_pass, data_tokens=per_pass)
    assert text == f"; passes over the training data ({per_pass:,} tokens): one-shot 2.00, loop 1.00"


def _with_tasks(window_nll, boolq, piqa):
    task = lambda scores: {"acc": sum(scores) / len(scores), "acc_stderr": 0.05, "item_scores": {"acc": scores}}  # noqa: E731
    return {**_evaluation(window_nll), "tasks": {"boolq": task(boolq), "piqa": task(piqa)}}


def test_the_table_gives_the_task_verdict_again_without_boolq():
    equal_budget = _module()
    answers_yes = [1] * 60 + [0] * 40  # a model that tipped its yes/no balance: BoolQ alone moves
    answers_no = [0] * 60 + [1] * 40
    piqa = [1, 0] * 50
    results = {
        **HEADER,
        "recovery": {"learning_rate": 1e-4, "precision": "bf16"},
        "commit": "abc",
        "evaluation": {"wikitext_windows": 4, "items_per_task": 100},
        "dense": _with_tasks([3.0, 3.1, 3.2, 3.3], answers_no, piqa),
        "rows": [
            {"contender": "tipped", "removed": [1], "prune_seconds": 5.0, **_with_tasks([4.0, 4.1, 4.2, 4.3], answers_yes, piqa)},
            {"contender": "kept", "removed": [2], "prune_seconds": 5.0, **_with_tasks([4.0, 4.1, 4.2, 4.3], answers_no, piqa)},
            {"contender": "better", "removed": [3], "prune_seconds": 5.0, **_with_tasks([4.0, 4.1, 4.2, 4.3], answers_yes, [1] * 100)},
        ],
    }
    table = equal_budget.markdown(results)
    assert "| -0.100 ± 0.049 worse |" in table  # kept against tipped: the task mean, all BoolQ
    last = table.splitlines()[-1]
    assert last == (
        "Task mean without BoolQ (it follows a small model's yes/no balance), against the first row: "
        "kept +0.000 ± 0.000 tie; better +0.500 ± 0.050 better."
    )
    assert "without BoolQ" not in equal_budget.markdown({**results, "dense": {**results["dense"], "tasks": {}}, "rows": []})
