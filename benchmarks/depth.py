"""Depth-pruning benchmark on the embedded SmolLM2-135M: every block metric at 3/6/9 removed blocks.

Reports dense WikiText-2 perplexity (seq 512, the first --eval-windows windows), perplexity after
removing 3/6/9 blocks chosen by each metric, scan time per metric, the time of one plain forward
pass over the calibration tokens (BI should stay within 1.2x of it), and forward tokens/s of the
dense and pruned models. Writes benchmarks/results/depth.{json,md}.

    python benchmarks/depth.py --wikitext ../shared/data/wikitext-2-raw-v1/wiki.test.raw
"""

from __future__ import annotations

import copy
import json
import platform
import time
from pathlib import Path

import torch

import prunekit
from prunekit import load_model, load_windows, parameter_count, perplexity, remove_blocks, scan_blocks
from prunekit.provenance import library_versions

from _common import benchmark_parser


def forward_seconds(model, windows) -> float:
    """One plain forward pass over the calibration windows (the yardstick for scan cost)."""
    started = time.perf_counter()
    with torch.no_grad():
        for row in windows.input_ids:
            model(input_ids=row[None], use_cache=False)
    return time.perf_counter() - started


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--sleb-windows", type=int, default=4, help="SLEB re-scores every step; fewer windows keep it affordable")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--removals", type=int, nargs="+", default=[3, 6, 9])
    parser.add_argument("--metrics", nargs="+", default=["bi", "angular", "removal-cosine", "removal-loss", "taylor", "sleb"])
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu", dtype=args.dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=args.seq_len)
    evaluation = load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=args.seq_len)
    num_blocks = loaded.adapter.num_blocks

    forward_s = forward_seconds(model, calibration)
    dense = perplexity(model, evaluation)
    print(f"dense: ppl {dense.perplexity:.2f}, {dense.tokens_per_second:.0f} tok/s; forward over calibration {forward_s:.1f} s")
    results = {
        "model": args.model,
        "dense": dense.to_dict(),
        "forward_seconds_calibration": forward_s,
        "calibration": calibration.summary(),
        "rows": [],
        "versions": library_versions(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "dtype": args.dtype,
        "num_blocks": num_blocks,
        "dense_params": parameter_count(model),
    }

    def evaluate(label: str, removed: list[int], scan_seconds: float, extra: dict | None = None) -> None:
        pruned = copy.deepcopy(model)
        remove_blocks(pruned, removed)
        result = perplexity(pruned, evaluation)
        row = {
            "metric": label,
            "removed": len(removed),
            "blocks": removed,
            "perplexity": result.perplexity,
            "tokens_per_second": result.tokens_per_second,
            "params": parameter_count(pruned),
            "scan_seconds": scan_seconds,
            **(extra or {}),
        }
        results["rows"].append(row)
        print(f"{label:15s} -{len(removed)}: ppl {result.perplexity:8.2f}  blocks {removed}  scan {scan_seconds:.1f} s")
        del pruned

    for metric in args.metrics:
        if metric == "angular":
            for count in args.removals:
                plan = prunekit.prune(model, "angular", calibration, remove=count).plan
                evaluate("angular", plan.removed_blocks, plan.details()["scan_seconds"])
        elif metric == "sleb":
            sleb_windows = load_windows(
                args.calibration, tokenizer, purpose="calibration", num_windows=args.sleb_windows, seq_len=args.seq_len
            )
            details = prunekit.prune(model, "sleb", sleb_windows, remove=max(args.removals)).plan.details()
            # Greedy: the first k steps of the longest run are exactly the k-block plan.
            for count in args.removals:
                removed = sorted(s["removed"] for s in details["steps"][:count])
                evaluate("sleb", removed, details["scan_seconds"], {"calibration_windows": args.sleb_windows})
        else:
            scores = scan_blocks(model, calibration, metric)
            print(f"{metric}: least important first {scores.ranking()[:10]} ({scores.seconds:.1f} s)")
            for count in args.removals:
                evaluate(metric, sorted(scores.ranking()[:count]), scores.seconds, {"ranking": scores.ranking()})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "depth.md").write_text(markdown(results, args) + "\n")
    print(markdown(results, args))


def markdown(results: dict, args) -> str:
    dense = results["dense"]
    removals = args.removals
    lines = [
        f"Model `{results['model']}` ({args.dtype}, CPU, {results['machine']}); WikiText-2 test, first {dense['windows']} "
        f"windows of {dense['seq_len']} tokens; calibration: {results['calibration']['windows']} x {results['calibration']['seq_len']} "
        f"tokens of C4 (SLEB: {args.sleb_windows} windows). One plain forward pass over the calibration tokens: "
        f"{results['forward_seconds_calibration']:.1f} s.",
        "",
        "| metric | " + " | ".join(f"ppl -{k} blocks" for k in removals) + " | scan time (s) | scan / forward |",
        "|---|" + "---:|" * (len(removals) + 2),
        f"| dense ({results['num_blocks']} blocks) | " + " | ".join(f"{dense['perplexity']:.2f}" for _ in removals) + " | - | - |",
    ]
    by_metric: dict[str, dict[int, dict]] = {}
    for row in results["rows"]:
        by_metric.setdefault(row["metric"], {})[row["removed"]] = row
    for metric, rows in by_metric.items():
        scan = sum(r["scan_seconds"] for r in rows.values()) if metric == "angular" else next(iter(rows.values()))["scan_seconds"]
        cells = " | ".join(f"{rows[k]['perplexity']:.2f}" if k in rows else "-" for k in removals)
        lines.append(f"| {metric} | {cells} | {scan:.1f} | {scan / results['forward_seconds_calibration']:.2f} |")
    lines += [
        "",
        f"| model | blocks | parameters | forward tokens/s (seq {dense['seq_len']}) |",
        "|---|---:|---:|---:|",
        f"| dense | {results['num_blocks']} | {results['dense_params'] / 1e6:.1f}M | {dense['tokens_per_second']:.0f} |",
    ]
    for row in results["rows"]:
        if row["metric"] == "bi":
            lines.append(
                f"| bi -{row['removed']} | {results['num_blocks'] - row['removed']} | "
                f"{row['params'] / 1e6:.1f}M | {row['tokens_per_second']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
