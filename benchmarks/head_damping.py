"""Why does LIAR lose to bias compensation on attention heads? A sweep over ridge damping and
calibration size on the embedded SmolLM2-135M, heads only (one of three KV groups per block).

Large damping shrinks the least-squares map Q towards 0, which is bias compensation, so the sweep
shows whether the loss comes from over-fitting the calibration activations. Reports WikiText-2
perplexity (seq 512) and the mean o_proj output error on the calibration data.
Writes benchmarks/results/head_damping.{json,md}.

    python benchmarks/head_damping.py --calib-sizes 16 64 --dampings 1e-4 1e-2 1e-1 1
"""

from __future__ import annotations

import time
from pathlib import Path

import prunekit
from prunekit import load_model, load_windows, perplexity

from _common import benchmark_parser, write_json, write_table


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--name", default="head_damping")
    parser.add_argument("--calib-sizes", type=int, nargs="+", default=[16, 64], help="calibration windows of 512 (one sweep each)")
    parser.add_argument("--dampings", type=lambda text: text if text == "auto" else float(text), nargs="+", default=[1e-4, 1e-2, 1e-1, 1.0])
    parser.add_argument("--head-ratio", type=float, default=0.34)
    parser.add_argument("--criterion", default="wanda")
    parser.add_argument("--eval-windows", type=int, default=32)
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu", dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    wikitext = load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=512)
    results = {
        "model": args.model,
        "head_ratio": args.head_ratio,
        "criterion": args.criterion,
        "wikitext": wikitext.summary(),
        "dense": perplexity(dense, wikitext, progress=False).perplexity,
        "rows": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for windows in args.calib_sizes:
        calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=windows, seq_len=512)
        settings = [("none", None), ("bias", None)] + [("liar", d) for d in args.dampings]
        for reconstruction, damping in settings:
            started = time.perf_counter()
            result = prunekit.prune(
                dense,
                "liar",
                calibration,
                head_ratio=args.head_ratio,
                criterion=args.criterion,
                reconstruction=reconstruction,
                damping=damping or 1e-4,
                channel_multiple=1,  # head pruning only; the widths these tables were measured with
                progress=False,
            )
            model, plan = result.model, result.plan.details()
            row = {
                "calib_windows": windows,
                "reconstruction": reconstruction,
                "damping": damping,
                "prune_seconds": time.perf_counter() - started,
                "o_proj_mse": sum(layer["o_proj_output_mse"] for layer in plan["layers"]) / len(plan["layers"]),
                "perplexity": perplexity(model, wikitext, progress=False).perplexity,
            }
            results["rows"].append(row)
            print(
                f"{windows} windows {reconstruction} {damping}: ppl {row['perplexity']:.2f}  o_proj mse {row['o_proj_mse']:.4g}", flush=True
            )
            write_json(out, args.name, results)
    write_table(out, args.name, markdown(results))


def markdown(results: dict) -> str:
    lines = [
        f"`{results['model']}` heads only ({results['head_ratio']:.0%} of the KV groups of every block, "
        f"{results['criterion']}); WikiText-2 {results['wikitext']['windows']}x512, dense {results['dense']:.2f}.",
        "",
        "| calibration windows (x512) | reconstruction | damping | ppl | mean o_proj output MSE (calibration) |",
        "|---:|---|---:|---:|---:|",
    ]
    for row in results["rows"]:
        damping = "-" if row["damping"] is None else str(row["damping"])
        lines.append(
            f"| {row['calib_windows']} | {row['reconstruction']} | {damping} | {row['perplexity']:.2f} | {row['o_proj_mse']:.4g} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
