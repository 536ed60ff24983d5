"""Width-pruning benchmark on the embedded SmolLM2-135M: criterion x reconstruction at a share of
the block parameters.

For each ratio R (share of every decoder block's parameters removed, split into whole KV groups and
FFN channels as `prunekit prune --method liar --ratio R` does), criterion and reconstruction (none,
FLAP bias compensation, LIAR least squares) it prunes the dense model block by block on C4
calibration windows and reports WikiText-2 perplexity at seq 512 and 128, local zero-shot tasks
(first --limit items), wall time and peak memory of the pruning itself. Every row runs in its own
process so that its peak RSS is its own. Writes benchmarks/results/width.{json,md} after every row.

    python benchmarks/width.py --ratios 0.2 0.3 0.5 --limit 100
"""

from __future__ import annotations

import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import SHARED, benchmark_parser, git_commit, verdict_text, write_json, write_table

DEFAULT_TASKS = ["piqa", "arc_easy", "winogrande", "lambada_openai"]


def evaluate(model, tokenizer, args) -> dict:
    from prunekit import load_windows, perplexity
    from prunekit.evaluation.tasks import run_tasks

    out = {"perplexity": {}, "window_nll": {}}
    for length in (512, args.seq_len_short):
        windows = load_windows(
            args.wikitext, tokenizer, purpose="evaluation", num_windows=args.eval_windows * 512 // length, seq_len=length
        )
        result = perplexity(model, windows, progress=False)
        out["perplexity"][str(length)] = result.perplexity
        out["window_nll"][str(length)] = result.window_nll
    tasks = [t for t in args.tasks.split(",") if t]
    out["tasks"] = run_tasks(model, tokenizer, tasks, data_dir=SHARED, limit=args.limit, progress=False) if tasks else {}
    return out


def one_row(args) -> dict:
    """Prune one copy and measure it (runs in a child process)."""
    import prunekit
    from prunekit import load_model, load_windows

    loaded = load_model(args.model, device="cpu", dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    if args.row == "dense":
        return {"row": "dense", **evaluate(model, tokenizer, args)}
    ratio, criterion, reconstruction = args.row.split(":")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    plan = prunekit.prune(
        model,
        "liar",
        calibration,
        inplace=True,
        **({"ffn_ratio": float(ratio)} if args.ratio_of == "ffn" else {"ratio": float(ratio), "ratio_heads": args.with_heads}),
        allocation=args.allocation,
        min_keep=args.min_keep,
        criterion=criterion,
        damping=args.damping,
        reconstruction=reconstruction,
        channel_multiple=1,  # the exact widths the width tables were measured with
        progress=False,
    ).plan.details()
    head_ratio, ffn_ratio = plan["kv_groups_removed"], plan["ffn_channels_removed"]
    widths = [(layer["kv_groups"], layer["channels"]) for layer in plan["layers"]]
    seconds = time.perf_counter() - started
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    layers = plan["layers"]
    return {
        "row": args.row,
        "ratio": float(ratio),
        "criterion": criterion,
        "reconstruction": reconstruction,
        "head_ratio": head_ratio,
        "ffn_ratio": ffn_ratio,
        "allocation": args.allocation,
        "damping": args.damping,
        "widths": widths,
        "prune_seconds": seconds,
        "rss_loaded_mib": rss_loaded,
        "rss_peak_mib": rss_peak,
        "params": plan["params_after"],
        "params_before": plan["params_before"],
        "mean_down_proj_mse": sum(layer.get("output_mse", 0.0) for layer in layers) / len(layers),
        "mean_o_proj_mse": sum(layer.get("o_proj_output_mse", 0.0) for layer in layers) / len(layers),
        **evaluate(model, tokenizer, args),
    }


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--name", default="width")
    parser.add_argument("--eval-windows", type=int, default=48, help="WikiText-2 windows of 512 (the same tokens at seq 128)")
    parser.add_argument("--seq-len-short", type=int, default=128)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument("--criteria", nargs="+", default=["magnitude", "wanda", "fluctuation"])
    parser.add_argument("--reconstructions", nargs="+", default=["none", "bias", "liar"])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument(
        "--with-heads", action="store_true", help="split the ratio into whole KV groups and FFN channels (default: FFN channels only)"
    )
    parser.add_argument(
        "--ratio-of", default="block", choices=["block", "ffn"], help="ratios are shares of the block parameters or of the FFN channels"
    )
    parser.add_argument("--allocation", default="uniform", choices=["uniform", "adaptive"])
    parser.add_argument("--min-keep", type=float, default=0.1)
    parser.add_argument("--damping", type=lambda text: text if text == "auto" else float(text), default=1e-4)
    parser.add_argument("--dense-from", help="take the dense row from this earlier results JSON instead of measuring it again")
    parser.add_argument("--table-only", action="store_true", help="rewrite the markdown table from the saved JSON")
    parser.add_argument("--row", help="internal: run one row in this process and print its JSON")
    args = parser.parse_args()
    if args.row:
        print("ROW " + json.dumps(one_row(args)), flush=True)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        write_table(out, args.name, markdown(json.loads((out / f"{args.name}.json").read_text())))
        return
    passthrough = sys.argv[1:]
    results = {
        "model": args.model,
        "commit": git_commit(),
        "command": "python benchmarks/width.py " + shlex.join(sys.argv[1:]),
        "with_heads": args.with_heads,
        "allocation": args.allocation,
        "ratio_of": args.ratio_of,
        "calib_windows": args.calib_windows,
        "eval_windows": args.eval_windows,
        "seq_len_short": args.seq_len_short,
        "tasks": args.tasks,
        "limit": args.limit,
        "rows": [],
    }
    rows = ["dense"] + [f"{r}:{c}:{m}" for r in args.ratios for c in args.criteria for m in args.reconstructions]
    if args.dense_from:
        results["dense"] = json.loads(Path(args.dense_from).read_text())["dense"]
        rows = rows[1:]
    for row in rows:
        started = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, *passthrough, "--row", row], capture_output=True, text=True)
        line = next((ln for ln in child.stdout.splitlines() if ln.startswith("ROW ")), None)
        if child.returncode != 0 or line is None:
            print(f"{row}: failed\n{child.stderr[-2000:]}", flush=True)
            continue
        record = json.loads(line[4:])
        record["wall_seconds"] = time.perf_counter() - started
        if row == "dense":
            results["dense"] = record
        else:
            results["rows"].append(record)
        print(
            f"{row}: ppl {record['perplexity']}  {record.get('prune_seconds', 0):.0f} s prune, {record['wall_seconds']:.0f} s row",
            flush=True,
        )
        write_json(out, args.name, results)
    write_table(out, args.name, markdown(results))


def _task_accuracy(values: dict) -> float:
    return values.get("acc_norm", values.get("acc", float("nan")))


def markdown(results: dict) -> str:
    tasks = [t for t in results["tasks"].split(",") if t]
    short = results["seq_len_short"]
    dense = results["dense"]
    header = (
        f"`{results['model']}` fp32 on CPU (2 cores); calibration {results['calib_windows']} x 512 C4 tokens; WikiText-2 test, "
        f"first {results['eval_windows'] * 512} tokens"
        + (f"; tasks: first {results['limit']} items (acc_norm where defined)" if tasks else "")
        + ". "
        + (
            "Ratio = share of every block's FFN channels removed."
            if results.get("ratio_of") == "ffn"
            else "Ratio = share of every block's parameters removed."
        )
    )
    if "commit" in results:
        header += f" Commit `{results['commit']}`; command: `{results['command']}`."
    lines = [
        header,
        "",
        f"| ratio | heads / FFN removed | criterion | reconstruction | ppl@512 | ppl@{short} | "
        + "".join(f"{t} | " for t in tasks)
        + ("task mean | " if tasks else "")
        + "prune s | peak RSS MiB (loaded) | ppl@512 vs none (NLL per token) |",
        "|---:|---|---|---|---:|---:|" + "---:|" * (len(tasks) + (3 if tasks else 2)) + "---|",
    ]

    def cells(record):
        accs = [_task_accuracy(record["tasks"][t]) for t in tasks if t in record["tasks"]]
        mean = sum(accs) / len(accs) if accs else float("nan")
        perplexities = f"{record['perplexity']['512']:.2f} | {record['perplexity'][str(short)]:.2f}"
        return perplexities + "".join(f" | {a:.3f}" for a in accs) + (f" | {mean:.3f}" if tasks else "")

    lines.append(f"| 0 | - | dense | - | {cells(dense)} | - | - | - |")
    for row in results["rows"]:
        lines.append(
            f"| {row['ratio']:.0%} | {row['head_ratio']:.0%} / {row['ffn_ratio']:.1%} | {row['criterion']} | "
            f"{row['reconstruction']} | {cells(row)} | {row['prune_seconds']:.0f} | "
            f"{row['rss_peak_mib']:.0f} ({row['rss_loaded_mib']:.0f}) | {_against_none(row, results['rows'])} |"
        )
    return "\n".join(lines)


def _against_none(row: dict, rows: list[dict]) -> str:
    """Paired difference in mean NLL over the same WikiText-2 windows against the `none` row of the same cell."""
    from prunekit.evaluation.significance import compare

    reference = next(
        (r for r in rows if r["reconstruction"] == "none" and r["ratio"] == row["ratio"] and r["criterion"] == row["criterion"]), None
    )
    if row["reconstruction"] == "none" or reference is None or "window_nll" not in row or "window_nll" not in reference:
        return "-"
    return verdict_text(compare(reference["window_nll"]["512"], row["window_nll"]["512"], higher_is_better=False))


if __name__ == "__main__":
    main()
