"""Width-pruning benchmark on the embedded SmolLM2-135M: FFN channels, criterion x reconstruction.

For each FFN ratio, criterion and reconstruction (none, FLAP bias compensation, LIAR least squares)
it prunes a fresh copy of the dense model block by block on C4 calibration windows and reports
WikiText-2 perplexity (seq 512 and, with --seq-len-short, 128), wall time and peak memory of the
pruning itself. Writes benchmarks/results/width.{json,md}.

    python benchmarks/width.py --ratios 0.2 0.5 --criteria wanda
"""

from __future__ import annotations

import copy
import json
import resource
import time
from pathlib import Path

from _common import benchmark_parser

from prunekit import load_model, load_windows, perplexity
from prunekit.methods.liar import prune_ffn_channels



def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument("--criteria", nargs="+", default=["magnitude", "wanda", "fluctuation"])
    parser.add_argument("--reconstructions", nargs="+", default=["none", "bias", "liar"])
    parser.add_argument("--seq-len-short", type=int, help="also report perplexity at this window length (FLAP uses 128)")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu", dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    lengths = [512] + ([args.seq_len_short] if args.seq_len_short else [])
    evaluation = {L: load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.eval_windows * 512 // L, seq_len=L)
                  for L in lengths}
    results = {"model": args.model, "calibration": calibration.summary(),
               "dense": {L: perplexity(dense, w, progress=False).perplexity for L, w in evaluation.items()}, "rows": []}
    print(f"dense: {results['dense']}")
    for ratio in args.ratios:
        for criterion in args.criteria:
            for reconstruction in args.reconstructions:
                model = copy.deepcopy(dense)
                started = time.perf_counter()
                plan = prune_ffn_channels(model, calibration, ffn_ratio=ratio, criterion=criterion,
                                          reconstruction=reconstruction, progress=False)
                seconds = time.perf_counter() - started
                row = {"ffn_ratio": ratio, "criterion": criterion, "reconstruction": reconstruction, "prune_seconds": seconds,
                       "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       "params": plan["params_after"], "params_before": plan["params_before"],
                       "mean_output_mse": sum(layer["output_mse"] for layer in plan["layers"]) / len(plan["layers"]),
                       "perplexity": {L: perplexity(model, w, progress=False).perplexity for L, w in evaluation.items()}}
                results["rows"].append(row)
                print(f"ffn {ratio:.0%} {criterion:11s} {reconstruction:5s}: ppl {row['perplexity']}  "
                      f"mse {row['mean_output_mse']:.4g}  {seconds:.0f} s")
                del model
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "width.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, lengths, args)
    (out / "width.md").write_text(table + "\n")
    print(table)


def markdown(results: dict, lengths: list[int], args) -> str:
    dense = results["dense"]
    lines = [f"FFN channels only, `{results['model']}` fp32 on CPU; calibration {args.calib_windows} x 512 C4 tokens; "
             f"WikiText-2 test, first {args.eval_windows * 512} tokens. Dense: "
             + ", ".join(f"ppl@{L} {dense[L]:.2f}" for L in lengths) + ".", "",
             "| FFN ratio | share of all params removed | criterion | reconstruction | " + " | ".join(f"ppl@{L}" for L in lengths)
             + " | mean down_proj output MSE | prune time (s) | process peak RSS so far (MiB) |",
             "|---:|---:|---|---|" + "---:|" * (len(lengths) + 3)]
    for row in results["rows"]:
        removed = 1 - row["params"] / row["params_before"]
        lines.append(f"| {row['ffn_ratio']:.0%} | {removed:.1%} | {row['criterion']} | {row['reconstruction']} | "
                     + " | ".join(f"{row['perplexity'][L]:.2f}" for L in lengths)
                     + f" | {row['mean_output_mse']:.4g} | {row['prune_seconds']:.0f} | {row['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
