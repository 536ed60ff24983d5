"""What composing depth and width pruning buys (issue 11): ShortGPT alone, LIAR alone and ShortGPT then
LIAR, each removing about the same share of the embedded model's parameters, without and with the
same recovery. Every contender runs through the public API (`prunekit.prune` with a recipe).

WikiText-2 perplexity on the same windows for every contender; the standard error of a difference is
paired over windows (mean NLL per window), and a difference counts only beyond two of them.
Writes benchmarks/results/composition.{json,md} after every row and resumes from the rows it has.

    python benchmarks/composition.py --target 0.25 --recovery-tokens 50000
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prunekit.evaluation.significance import compare

from _common import benchmark_parser, git_commit, write_json, write_table


def contenders(model, target: float, combined_blocks: int) -> dict:
    """Recipes removing about `target` of all parameters: blocks, block width, or both."""
    import prunekit

    total = prunekit.parameter_count(model)
    adapter = prunekit.ModelAdapter(model)
    block, count = adapter.block_parameter_count(0), adapter.num_blocks
    remove = max(1, round(target * total / block))
    width_ratio = target * total / (count * block)
    rest_ratio = (target * total - combined_blocks * block) / ((count - combined_blocks) * block)
    return {
        "shortgpt": [{"method": "shortgpt", "remove": remove}],
        # exact widths (channel_multiple 1), as the table was measured
        "liar": [{"method": "liar", "ratio": round(width_ratio, 4), "channel_multiple": 1}],
        "shortgpt+liar": [
            {"method": "shortgpt", "remove": combined_blocks},
            {"method": "liar", "ratio": round(rest_ratio, 4), "channel_multiple": 1},
        ],
    }


def evaluate(model, windows) -> dict:
    import prunekit

    result = prunekit.perplexity(model, windows, progress=False)
    return {"ppl": result.perplexity, "nll": result.nll, "nll_se": result.nll_standard_error, "window_nll": result.window_nll}


def table(results: dict) -> str:
    rows = results["rows"]
    lines = [
        f"Commit `{results['commit']}`; command: `{results['command']}`. `{results['model']}` fp32 on CPU (2 cores); "
        f"calibration {results['calibration']}; recovery {results['recovery_tokens']} tokens of C4 (KL distillation from the "
        f"dense model, every remaining block trains, lr 1e-4); WikiText-2 test {results['eval']}. Differences are paired over "
        f"the same windows (mean NLL per window): 'better'/'worse' only beyond two standard errors, 'tie' otherwise.",
        "",
        "| contender | recipe | parameters removed | WikiText-2 ppl | vs best single method | prune s | recovery s |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for suffix in ("", "+recovery"):
        names = [n for n in ("shortgpt", "liar", "shortgpt+liar") if n + suffix in rows]
        singles = [rows[n + suffix] for n in ("shortgpt", "liar") if n + suffix in rows]
        best = min(singles, key=lambda r: r["ppl"]) if singles else None
        for name in names:
            row = rows[name + suffix]
            verdict = "-"
            if best is not None and row is not best:
                paired = compare(best["window_nll"], row["window_nll"], higher_is_better=False)
                verdict = f"{paired['verdict']} ({paired['difference']:+.4f} ± {paired['standard_error']:.4f} nats)"
            recipe = " + ".join(f"{s['method']} {s.get('remove', s.get('ratio'))}" for s in row["recipe"])
            lines.append(
                f"| {name + suffix} | {recipe} | {row['removed_share']:.1%} | {row['ppl']:.2f} | {verdict} | "
                f"{row['prune_seconds']:.0f} | {row.get('recovery_seconds', 0):.0f} |"
            )
    dense = rows.get("dense")
    if dense:
        lines.append(f"| dense | - | 0% | {dense['ppl']:.2f} | - | - | - |")
    return "\n".join(lines)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--target", type=float, default=0.25, help="share of all parameters each contender removes")
    parser.add_argument("--combined-blocks", type=int, default=4, help="blocks ShortGPT removes in the combined recipe")
    parser.add_argument("--recovery-tokens", type=int, default=50_000)
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--name", default="composition")
    parser.add_argument("--table-only", action="store_true", help="rewrite the markdown table from the saved JSON")
    args = parser.parse_args()
    if args.table_only:
        write_table(Path(args.out), args.name, table(json.loads((Path(args.out) / f"{args.name}.json").read_text())))
        return

    import prunekit

    out = Path(args.out)
    path = out / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    commit = git_commit()
    results.update(
        commit=commit,
        model=args.model,
        recovery_tokens=args.recovery_tokens,
        command=f"python benchmarks/composition.py --target {args.target} --recovery-tokens {args.recovery_tokens}",
    )
    loaded = prunekit.load_model(args.model, device="cpu", dtype="float32", progress=False)
    dense, tokenizer = loaded.model, loaded.tokenizer
    calibration = prunekit.load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    evaluation = prunekit.load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=512)
    results.update(calibration=f"{calibration.num_windows}x512 C4", eval=f"{evaluation.num_windows}x512")
    rows = results["rows"]
    if "dense" not in rows:
        rows["dense"] = {**evaluate(dense, evaluation), "removed_share": 0.0, "prune_seconds": 0.0, "recipe": []}
        write_json(out, args.name, results)
    total = prunekit.parameter_count(dense)
    recovery = prunekit.RecoveryConfig(tokens=args.recovery_tokens, seq_len=512, grad_accumulation=4)
    for name, recipe in contenders(dense, args.target, args.combined_blocks).items():
        if name in rows and name + "+recovery" in rows:
            continue
        started = time.perf_counter()
        result = prunekit.prune(dense, recipe, calibration, progress=False)
        prune_seconds = time.perf_counter() - started
        removed = 1 - result.plan.params_after / total
        rows[name] = {**evaluate(result.model, evaluation), "recipe": recipe, "removed_share": removed, "prune_seconds": prune_seconds}
        write_json(out, args.name, results)
        print(name, f"{rows[name]['ppl']:.2f}", flush=True)
        started = time.perf_counter()
        prunekit.prune(
            result.model, recovery, teacher=dense, tokenizer=tokenizer, recovery_data=args.calibration, inplace=True, progress=False
        )
        rows[name + "+recovery"] = {
            **evaluate(result.model, evaluation),
            "recipe": recipe,
            "removed_share": removed,
            "prune_seconds": prune_seconds,
            "recovery_seconds": time.perf_counter() - started,
        }
        write_json(out, args.name, results)
        print(name + "+recovery", f"{rows[name + '+recovery']['ppl']:.2f}", flush=True)
    write_table(out, args.name, table(results))


if __name__ == "__main__":
    main()
