"""The report's plots are chosen by what each run did, and each shows the numbers it was given."""

from __future__ import annotations

import pytest

from prunekit.reporting import make_plots


def result(label, blocks, ppl, plan=None, tasks=None):
    out = {"label": label, "blocks": blocks, "parameters": blocks * 1e6, "perplexity": {"builtin": {"perplexity": ppl}}}
    if plan is not None:
        out["plan"] = plan
    if tasks is not None:
        out["tasks"] = tasks
    return out


def depth_plan(method="shortgpt"):
    return {
        "stages": [
            {
                "method": method,
                "details": {
                    "method": method,
                    "removed_blocks": [1, 2],
                    "num_blocks_before": 4,
                    "scores": [0.9, 0.1, 0.2, 0.8],
                    "metric": "bi",
                },
            }
        ]
    }


def by_name(plots):
    return {plot.name: plot for plot in plots}


def test_a_depth_run_gets_perplexity_bars_with_values_and_its_block_importance(tmp_path):
    dense, pruned = result("dense", 4, 20.0), result("pruned", 2, 31.5, depth_plan())
    plots = by_name(make_plots([dense, pruned], dense, tmp_path))
    assert set(plots) == {"perplexity.png", "importance-1.png"}
    panel = plots["perplexity.png"].data["panels"][0]
    assert panel["bars"] == [20.0, 31.5] and panel["texts"] == ["20.00", "31.50"] and panel["xticklabels"] == ["builtin"]
    importance = plots["importance-1.png"].data["panels"][0]
    assert importance["bars"] == [0.9, 0.1, 0.2, 0.8] and "removed [1, 2]" in importance["title"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in plots)


def test_an_iterative_run_plots_only_the_points_it_measured(tmp_path):
    steps = [
        {"removed": [3], "heldout_perplexity_after_removal": 30.0, "heldout_perplexity_after_recovery": 25.0},
        {"removed": [1], "heldout_perplexity_after_removal": 40.0, "heldout_perplexity_after_recovery": None},
        {"removed": [], "final": True, "heldout_perplexity_after_recovery": 28.0},
    ]
    plan = {
        "stages": [
            {"method": "iterabre", "details": {"method": "iterabre", "steps": steps, "removed_blocks": [1, 3], "num_blocks_before": 4}}
        ]
    }
    dense = result("dense", 4, 20.0)
    plots = by_name(make_plots([dense, result("iterabre", 2, 28.0, plan)], dense, tmp_path))
    line = plots["perplexity-steps.png"].data["panels"][0]
    assert line["lines"] == [[(1.0, 30.0), (1.0, 25.0), (2.0, 40.0), (2.0, 28.0)]]
    assert line["texts"] == ["30.0", "25.0", "40.0", "28.0"] and line["xlabel"] == "blocks removed"


def test_a_single_result_without_steps_gets_no_line_through_unmeasured_steps(tmp_path):
    dense = result("dense", 4, 20.0)
    plots = by_name(make_plots([dense, result("pruned", 2, 30.0, depth_plan())], dense, tmp_path))
    assert "perplexity-steps.png" not in plots
    assert plots["perplexity.png"].data["panels"][0]["lines"] == []


def test_a_width_run_plots_kept_channels_and_heads_per_layer(tmp_path):
    layers = [{"block": 0, "channels": 96, "kv_groups": 2}, {"block": 1, "channels": 64, "kv_groups": 1}]
    details = {"method": "liar", "layers": layers, "intermediate_size_before": 128, "kv_heads_before": 2, "criterion": "wanda"}
    dense = result("dense", 2, 20.0)
    plots = by_name(make_plots([dense, result("liar", 2, 22.0, {"stages": [{"method": "liar", "details": details}]})], dense, tmp_path))
    ffn, kv = plots["widths-1.png"].data["panels"]
    assert ffn["bars"] == [96.0, 64.0] and ffn["ylabel"] == "kept FFN channels" and "before: 128" in ffn["texts"]
    assert kv["bars"] == [2.0, 1.0] and kv["ylabel"] == "kept KV head groups"


def test_a_recipe_gets_one_panel_per_stage(tmp_path):
    layers = [{"block": 0, "channels": 96, "kv_groups": 2}, {"block": 1, "channels": 96, "kv_groups": 2}]
    stages = [
        depth_plan()["stages"][0],
        {"method": "liar", "details": {"method": "liar", "layers": layers, "intermediate_size_before": 128, "kv_heads_before": 2}},
        {"method": "recover", "details": {"loss_first": 2.5, "loss_last": 1.5, "tokens": 1000}},
    ]
    dense = result("dense", 4, 20.0)
    plots = by_name(make_plots([dense, result("recipe", 2, 25.0, {"stages": stages})], dense, tmp_path))
    assert set(plots) == {"perplexity.png", "stages-1.png"}
    panels = plots["stages-1.png"].data["panels"]
    assert [p["title"].split(":")[0].split(" removed")[0] for p in panels] == ["stage 1", "stage 2", "stage 3"]
    assert "recover on 1000 tokens" in panels[2]["title"] and "kept FFN channels" in panels[1]["title"]
    assert panels[0]["bars"] == [0.9, 0.1, 0.2, 0.8] and panels[1]["bars"] == [96.0, 96.0] and panels[2]["bars"] == [2.5, 1.5]


def test_task_and_language_plots_print_their_values(tmp_path):
    dense = result("dense", 4, 20.0, tasks={"piqa": {"acc": 0.6, "acc_norm": 0.62}})
    dense["multilingual"] = {"deu_Latn": {"perplexity": 10.0}}
    pruned = result("pruned", 2, 30.0, tasks={"piqa": {"acc": 0.55}})
    pruned["multilingual"] = {"deu_Latn": {"perplexity": 15.0}}
    plots = by_name(make_plots([dense, pruned], dense, tmp_path))
    assert plots["tasks.png"].data["panels"][0]["bars"] == [0.62, 0.55]
    assert plots["tasks.png"].data["panels"][0]["texts"] == ["0.620", "0.550"]
    assert plots["languages.png"].data["panels"][0]["bars"] == pytest.approx([1.5])


def test_what_a_plot_shows_comes_from_the_stage_record_not_the_method_name(tmp_path):
    """Span scores (angular), replaced blocks (FlexiGPT) and a grown model (extend) are read from the details."""
    span_plan = {
        "stages": [
            {
                "method": "mine",
                "details": {"removed_blocks": [1, 2, 3], "num_blocks_before": 6, "scores": [0.5, 0.1, 0.4, 0.6], "metric": "angular"},
            }
        ]
    }
    dense = result("dense", 6, 20.0)
    importance = by_name(make_plots([dense, result("span", 3, 30.0, span_plan)], dense, tmp_path))["importance-1.png"]
    assert importance.data["panels"][0]["bars"] == [0.5, 0.1, 0.4, 0.6] and importance.data["panels"][0]["xlabel"] == "span start (span 3)"
    replaced = {"method": "other", "details": {"replaced_blocks": [2], "num_blocks_before": 4}}
    grown = {"method": "grow", "details": {"blocks_before": 4, "blocks_after": 6}}
    stages = {"stages": [replaced, grown]}
    panels = by_name(make_plots([dense, result("both", 6, 21.0, stages)], dense, tmp_path))["stages-1.png"].data["panels"]
    assert "replaced [2]" in panels[0]["title"] and panels[1]["bars"] == [4.0, 6.0]
