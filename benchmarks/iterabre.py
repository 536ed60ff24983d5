"""IteRABRe against one-shot block removal on the embedded SmolLM2-135M, same recovery budget for all.

Contenders, each removing `--remove` blocks (default 6 of 30, 20%):
  shortgpt           one BI scan, remove the lowest blocks, no recovery
  shortgpt+recovery  the same, then one distillation run on the whole token budget
  sleb               greedy removal by calibration loss, re-scored after each removal, no recovery
  iterabre           remove one block by output similarity (removal-cosine), recover on budget/N, repeat
Recovery: KL distillation from the dense model on C4 windows (the same windows, in the same order,
for every contender), every remaining block trainable, AdamW with warm-up and cosine decay.
Reports WikiText-2 test perplexity (seq 512), local zero-shot tasks with a fixed --limit, FLORES
per-language perplexity ratios to the dense model, and wall time. Results are written after each
contender, so a long run that is stopped keeps what it finished.

    python benchmarks/iterabre.py --budget 200000            # the README table
    python benchmarks/iterabre.py --quick                     # 20k tokens, fewer items
"""

from __future__ import annotations

import time
from pathlib import Path

import prunekit
from prunekit import IterabreConfig, RecoveryConfig, load_model, load_windows, parameter_count, perplexity
from prunekit.evaluation.multilingual import language_ratios, multilingual_perplexity
from prunekit.evaluation.tasks import DEFAULT_TASKS, run_tasks
from prunekit.recovery import recovery_windows

from _common import SHARED, benchmark_parser, write_json, write_table

CONTENDERS = ("shortgpt", "shortgpt+recovery", "sleb", "iterabre")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--remove", type=int, default=6)
    parser.add_argument("--budget", type=int, default=200_000, help="recovery tokens per contender (in total)")
    parser.add_argument("--quick", action="store_true", help="20k tokens, limit 50, 16 perplexity windows")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--score-windows", type=int, default=4, help="calibration windows for the iterative scans (SLEB, IteRABRe)")
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--limit", type=int, default=100, help="items per zero-shot task")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--flores-windows", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--precision", default="bf16", help="recovery precision (bf16 autocast is ~1.6x faster on this CPU)")
    parser.add_argument("--name", default="iterabre")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.limit, args.eval_windows, args.name = 20_000, 50, 16, f"{args.name}_quick"
    tasks = [t for t in args.tasks.split(",") if t]

    loaded = load_model(args.model, device="cpu", dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    score_windows = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.score_windows, seq_len=512, seed=1)
    wikitext = load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=512)
    recovery_data = recovery_windows(args.calibration, tokenizer, num_tokens=args.budget, seq_len=512, seed=0)
    recovery = RecoveryConfig(
        tokens=args.budget,
        seq_len=512,
        learning_rate=args.lr,
        precision=args.precision,
        grad_accumulation=4,
        micro_batch_size=1,
        scope="blocks",
    )
    flores = SHARED / "flores200"

    def evaluate(model, label: str) -> dict:
        started = time.perf_counter()
        result = {"label": label, "params": parameter_count(model), "wikitext2": perplexity(model, wikitext, progress=False).perplexity}
        result["flores"] = {
            lang: r["perplexity"]
            for lang, r in multilingual_perplexity(model, tokenizer, flores, max_windows=args.flores_windows, progress=False).items()
        }
        result["tasks"] = run_tasks(model, tokenizer, tasks, data_dir=SHARED, limit=args.limit, progress=False) if tasks else {}
        result["eval_seconds"] = time.perf_counter() - started
        return result

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "model": args.model,
        "remove": args.remove,
        "budget": args.budget,
        "limit": args.limit,
        "recovery": recovery.to_dict(),
        "recovery_data": recovery_data.summary(),
        "calibration": calibration.summary(),
        "score_windows": score_windows.summary(),
        "wikitext": wikitext.summary(),
        "rows": [],
    }
    results["dense"] = evaluate(dense, "dense")
    print(f"dense: ppl {results['dense']['wikitext2']:.2f}", flush=True)
    for name in args.contenders:
        started = time.perf_counter()
        detail: dict = {}
        if name.startswith("shortgpt"):
            result = prunekit.prune(dense, "shortgpt", calibration, remove=args.remove, progress=False)
            model, removed = result.model, result.plan.removed_blocks
            if name == "shortgpt+recovery":
                detail["ppl_before_recovery"] = perplexity(model, wikitext, progress=False).perplexity
                trained = prunekit.prune(model, recovery, teacher=dense, recovery_data=recovery_data, inplace=True, progress=False)
                d = trained.plan.details()
                detail.update(
                    recovery_tokens=d["tokens"],
                    recovery_seconds=d["seconds"],
                    tokens_per_second=d["tokens_per_second"],
                    loss_first=d["loss_first"],
                    loss_last=d["loss_last"],
                )
        elif name == "sleb":
            result = prunekit.prune(dense, "sleb", score_windows, remove=args.remove, progress=False)
            model, removed = result.model, [s["removed"] for s in result.plan.details()["steps"]]
        else:  # "iterabre"; argparse refused any other name before the dense model was loaded
            result = prunekit.prune(
                dense, IterabreConfig(remove=args.remove, recovery=recovery), score_windows, recovery_data=recovery_data, progress=False
            )
            model, steps = result.model, [s for s in result.plan.details()["steps"] if not s.get("final")]
            removed = [s["removed"][0] for s in steps]
            detail["iterations"] = [
                {k: s[k] for k in ("removed", "score", "loss_before_recovery", "loss_after_recovery", "seconds")} for s in steps
            ]
            detail["recovery_tokens"] = sum(s["recovery"]["tokens"] for s in steps)
        prune_seconds = time.perf_counter() - started
        row = {"contender": name, "removed": removed, "prune_seconds": prune_seconds, **detail, **evaluate(model, name)}
        row["flores_ratios"] = language_ratios(
            {k: {"perplexity": v} for k, v in row["flores"].items()}, {k: {"perplexity": v} for k, v in results["dense"]["flores"].items()}
        )
        results["rows"].append(row)
        print(f"{name}: removed {removed}, ppl {row['wikitext2']:.2f}, {prune_seconds:.0f} s", flush=True)
        write_json(out, args.name, results)
        del model
    write_table(out, args.name, markdown(results, tasks))


def _accuracy(values: dict) -> float:
    return values.get("acc_norm", values.get("acc"))


def markdown(results: dict, tasks: list[str]) -> str:
    dense = results["dense"]
    languages = list(dense["flores"])
    lines = [
        f"`{results['model']}` fp32 on CPU (2 cores), {results['remove']} of 30 blocks removed; recovery budget "
        f"{results['budget']:,} tokens of C4 per contender (KL distillation, all remaining blocks, lr "
        f"{results['recovery']['learning_rate']}, {results['recovery']['precision']} autocast); WikiText-2 test "
        f"{results['wikitext']['windows']}x512; tasks limited to {results['limit']} items (acc_norm where lm-eval has it); "
        "FLORES: mean pruned/dense perplexity ratio over " + ", ".join(languages) + ".",
        "",
        "| contender | removed blocks | WikiText-2 ppl | x dense | "
        + " | ".join(tasks)
        + " | task mean | FLORES ratio (mean / worst) | wall time (s) |",
        "|---|---|---:|---:|" + "---:|" * len(tasks) + "---:|---|---:|",
    ]

    def row(label, removed, entry, ratios, seconds):
        accs = [_accuracy(entry["tasks"][t]) for t in tasks]
        mean = sum(accs) / len(accs) if accs else float("nan")
        flores = f"{sum(ratios.values()) / len(ratios):.2f} / {max(ratios.values()):.2f} ({max(ratios, key=ratios.get)})" if ratios else "-"
        return (
            f"| {label} | {removed} | {entry['wikitext2']:.2f} | {entry['wikitext2'] / dense['wikitext2']:.2f} | "
            + " | ".join(f"{a:.3f}" for a in accs)
            + f" | {mean:.3f} | {flores} | {seconds} |"
        )

    lines.append(row("dense", "-", dense, {}, "-"))
    for entry in results["rows"]:
        lines.append(row(entry["contender"], entry["removed"], entry, entry["flores_ratios"], f"{entry['prune_seconds']:.0f}"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
