"""What rounding LIAR's kept FFN channels to a multiple of 64 costs in quality, paired on the same windows.

For each model and setting, LIAR runs twice on the same calibration windows, once with unrounded widths
(`channel_multiple` 1) and once rounded to 64; both are scored on WikiText-2 (per-window NLL) and the
rounded one is compared with the unrounded one ('worse' only beyond two standard errors). The speed
side of the trade is in `gguf_speed.py` (llama.cpp on this CPU) and the README's H200 table.

    python benchmarks/channel_multiple.py --models smollm2-135m gemma3-270m
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import prunekit
from prunekit import load_model, load_windows, parameter_count
from prunekit.evaluation.perplexity import perplexity
from prunekit.evaluation.significance import compare

from _common import benchmark_parser, git_commit, verdict_text, write_json, write_table

SETTINGS = {
    "20% uniform": {"ratio": 0.2},
    "20% adaptive": {"ratio": 0.2, "allocation": "adaptive"},
    "35% uniform": {"ratio": 0.35},
}
MULTIPLES = (1, 64)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help=f"from: {', '.join(SETTINGS)}")
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--name", default="channel_multiple")
    args = parser.parse_args()
    out = Path(args.out)
    path = out / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": []}
    results.update(
        commit=results.get("commit") or git_commit(),
        command="python benchmarks/channel_multiple.py " + " ".join(sys.argv[1:]),
        eval_windows=args.eval_windows,
        calib_windows=args.calib_windows,
    )
    done = {(row["model"], row["setting"], row["channel_multiple"]) for row in results["rows"]}
    for model_name in args.models:
        loaded = load_model(model_name, device="cpu", dtype="float32")
        calibration = load_windows(args.calibration, loaded.tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
        evaluation = load_windows(args.wikitext, loaded.tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=512)
        for setting in args.settings:
            for multiple in MULTIPLES:
                if (model_name, setting, multiple) in done:
                    continue
                started = time.perf_counter()
                result = prunekit.prune(loaded.model, "liar", calibration, channel_multiple=multiple, progress=False, **SETTINGS[setting])
                seconds = time.perf_counter() - started
                widths = [layer.mlp.down_proj.in_features for layer in prunekit.ModelAdapter(result.model).layers]
                measured = perplexity(result.model, evaluation, progress=False)
                results["rows"].append(
                    {
                        "model": model_name,
                        "setting": setting,
                        "channel_multiple": multiple,
                        "commit": git_commit(),
                        "params": parameter_count(result.model),
                        "ffn_widths": widths,
                        "perplexity": measured.perplexity,
                        "window_nll": measured.window_nll,
                        "prune_seconds": seconds,
                    }
                )
                write_json(out, args.name, results)
                print(f"{model_name} {setting} x{multiple}: ppl {measured.perplexity:.2f}, widths {sorted(set(widths))[:4]}", flush=True)
        del loaded
    write_table(out, args.name, markdown(results))


def markdown(results: dict) -> str:
    rows = {(r["model"], r["setting"], r["channel_multiple"]): r for r in results["rows"]}
    lines = [
        f"LIAR (wanda + least squares) with kept FFN channels unrounded and rounded to multiples of 64; WikiText-2 test "
        f"{results['eval_windows']}x512, paired over the same windows ('worse' only beyond two standard errors); calibration "
        f"{results['calib_windows']}x512 C4 windows; CPU (2 cores). Commit {results['commit']}; command: `{results['command']}`.",
        "",
        "| model | setting | params x1 / x64 (M) | FFN widths x1 | FFN widths x64 | ppl x1 | ppl x64 | x64 vs x1 (NLL/token) | "
        "wall time (s) x1 / x64 |",
        "|---|---|---|---|---|---:|---:|---|---|",
    ]
    for (model, setting, multiple), row in rows.items():
        if multiple != 1 or (model, setting, 64) not in rows:
            continue
        rounded = rows[(model, setting, 64)]
        versus = compare(row["window_nll"], rounded["window_nll"], higher_is_better=False)

        def span(widths):
            return f"{min(widths)}-{max(widths)}" if min(widths) != max(widths) else str(widths[0])

        lines.append(
            f"| {model} | {setting} | {row['params'] / 1e6:.1f} / {rounded['params'] / 1e6:.1f} | {span(row['ffn_widths'])} | "
            f"{span(rounded['ffn_widths'])} | {row['perplexity']:.2f} | {rounded['perplexity']:.2f} | {verdict_text(versus)} | "
            f"{row['prune_seconds']:.0f} / {rounded['prune_seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
