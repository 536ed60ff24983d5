"""The scale benchmark runs every row on a tiny shape on the CPU (the GPU run uses the same code)."""

import json

from conftest import load_benchmark


def test_scale_benchmark_runs_every_row_on_the_tiny_shape(tmp_path):
    scale = load_benchmark("scale")
    # No time budget: on a busy machine the default 330 s would skip rows, and this test is about every row running.
    assert scale.main(["--shapes", "tiny", "--device", "cpu", "--budget-s", "1e9", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "scale.json").read_text())
    rows = {row["row"]: row for row in results["rows"]}
    assert set(rows) == set(scale.TINY_ROWS) and not [r for r in rows.values() if "error" in r]
    assert all(row["seconds"] > 0 and row["peak_gib"] > 0 for row in rows.values())
    assert rows["liar-20"]["ffn_outputs"] == "recomputed" and rows["shortgpt-25"]["pruned_tokens_per_second"] > 0
    assert rows["recovery"]["tokens_per_second"] > 0 and rows["iterabre-1"]["removed"]
    assert "| tiny | liar-50 |" in (tmp_path / "scale.md").read_text()
