"""The standard evaluation on a tiny model and local files, and its paired comparison."""

from __future__ import annotations

import json

import pytest

from prunekit.evaluation.standard import C4_VALIDATION, StandardEvaluation, compare_results, evaluate_standard, task_mean
from test_evaluation_suite import write_local_tasks

from conftest import tiny_model

pytest.importorskip("lm_eval")


@pytest.fixture
def data_dir(tmp_path):
    write_local_tasks(tmp_path)
    (tmp_path / "wikitext-2-raw-v1").mkdir()
    (tmp_path / "wikitext-2-raw-v1" / "wiki.test.raw").write_text(" = Title = \n\n The quick brown fox jumps over it . \n" * 200)
    (tmp_path / "flores200" / "dev").mkdir(parents=True)
    for lang in ("eng_Latn", "fra_Latn"):
        (tmp_path / "flores200" / "dev" / f"{lang}.dev").write_text("A sentence in some language.\n" * 60)
    (tmp_path / "c4").mkdir()
    documents = [json.dumps({"text": f"Document {i} says something about the web.", "url": "u"}) for i in range(300)]
    (tmp_path / "c4" / C4_VALIDATION).write_text("\n".join(documents) + "\n")
    return tmp_path


def test_standard_evaluation_measures_everything_with_item_scores_and_compares_pairwise(data_dir, tiny_tokenizer):
    settings = StandardEvaluation(
        str(data_dir),
        wikitext_windows=3,
        c4_windows=2,
        seq_len=32,
        tasks=("piqa", "arc_easy", "openbookqa"),
        flores_windows=2,
        task_batch_size=2,
    )
    dense = evaluate_standard(tiny_model("llama", seed=0), tiny_tokenizer, settings)
    other = evaluate_standard(tiny_model("llama", seed=1), tiny_tokenizer, settings)
    assert len(dense["wikitext"]["window_nll"]) == 3 and set(dense["flores"]) == {"eng_Latn", "fra_Latn"}
    assert all(len(t["item_scores"]["acc"]) == t["items"] for t in dense["tasks"].values())
    mean, se = task_mean(dense)
    assert 0 <= mean <= 1 and se >= 0
    same = compare_results(dense, dense)
    assert same["wikitext"]["verdict"] == "tie" and same["c4"]["verdict"] == "tie" and same["flores"]["mean_ratio"] == 1.0
    versus = compare_results(dense, other)
    assert set(versus["tasks"]) == {"piqa", "arc_easy", "openbookqa"} and versus["task_mean"]["verdict"] in ("better", "worse", "tie")
    assert versus["flores"]["worst_language"] in ("eng_Latn", "fra_Latn")


def test_c4_perplexity_is_left_out_without_its_file_or_windows(data_dir, tiny_tokenizer):
    settings = StandardEvaluation(str(data_dir), wikitext_windows=2, c4_windows=2, seq_len=32, tasks=(), flores_windows=0)
    measured = evaluate_standard(tiny_model("llama", seed=0), tiny_tokenizer, settings)
    assert len(measured["c4"]["window_nll"]) == 2 and measured["c4"]["perplexity"] > 1
    (data_dir / "c4" / C4_VALIDATION).unlink()
    assert evaluate_standard(tiny_model("llama", seed=0), tiny_tokenizer, settings)["c4"] is None
    assert StandardEvaluation(str(data_dir), c4_windows=0).c4_path is None
