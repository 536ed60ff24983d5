"""The evaluation-precision benchmark reports bf16 autocast against fp32, paired, per model."""

from prunekit.evaluation.standard import compare_results

from conftest import load_benchmark


def _evaluation(window_nll, flores_nll):
    return {
        "wikitext": {"perplexity": 2.718 ** (sum(window_nll) / len(window_nll)), "window_nll": window_nll},
        "tasks": {},
        "flores": {"fra_Latn": {"perplexity": 2.718 ** (sum(flores_nll) / len(flores_nll)), "window_nll": flores_nll}},
        "wall_seconds": 10.0,
    }


def test_the_table_gives_the_paired_difference_of_bf16_against_fp32():
    module = load_benchmark("eval_precision")
    fp32 = _evaluation([3.0, 3.1, 3.2, 3.3], [4.0, 4.1, 4.2, 4.3])
    bf16 = _evaluation([3.01, 3.11, 3.21, 3.31], [4.0, 4.1, 4.2, 4.3])
    row = {"fp32": fp32, "bf16 autocast": bf16, "comparison": compare_results(fp32, bf16)}
    results = {
        "model": "m",
        "commit": "abc",
        "command": "c",
        "evaluation": {"wikitext_windows": 4, "flores_windows": 4},
        "rows": {"dense": row},
    }
    table = module.markdown(results)
    assert "| dense | 23.33 | 23.56 | +0.010 ± 0.000 worse | 1.0000 | +0.000 ± 0.000 tie | - | - | 10 / 10 |" in table
