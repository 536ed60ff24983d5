"""How much evaluating under bf16 autocast moves the standard evaluation, against fp32 (issue 15).

Until 7bba3b7 a model that came out of recovery with `--precision bf16` kept accelerate's autocast
forward, so the equal-budget tables scored full-block and FlexiGPT contenders under bf16 autocast and
LoRA contenders (merged back into a plain model) and the dense row in fp32. This measures the size of
that difference on the same windows, paired, for the dense model and a pruned one (angular, 6 of 30
blocks, no recovery), so the verdicts between those rows can be read against it.

    python benchmarks/eval_precision.py                 # WikiText-2 and FLORES
    python benchmarks/eval_precision.py --tasks piqa    # plus zero-shot tasks
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

import prunekit
from prunekit import load_model, load_windows
from prunekit.evaluation.standard import StandardEvaluation, compare_results, evaluate_standard, task_mean

from _common import SHARED, benchmark_parser, flores_versus, git_commit, verdict_text, write_json, write_table


def evaluate_both(model, tokenizer, settings: StandardEvaluation) -> dict:
    """The standard evaluation in fp32 and under bf16 autocast, with wall times and the paired verdict."""
    out = {}
    for precision in ("fp32", "bf16 autocast"):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32"):
            out[precision] = evaluate_standard(model, tokenizer, settings)
        out[precision]["wall_seconds"] = time.perf_counter() - started
    out["comparison"] = compare_results(out["fp32"], out["bf16 autocast"])
    return out


def markdown(results: dict) -> str:
    lines = [
        f"`{results['model']}` on CPU (2 cores); WikiText-2 test {results['evaluation']['wikitext_windows']}x512, FLORES "
        f"{results['evaluation']['flores_windows']} windows per language. Commit {results['commit']}; command: `{results['command']}`.",
        "Differences are bf16 autocast minus fp32, paired over the same windows / items ('better'/'worse' only beyond two "
        "standard errors).",
        "",
        "| model | WikiText-2 ppl fp32 | bf16 autocast | bf16 - fp32 (NLL per token) | FLORES mean ratio bf16/fp32 "
        "| FLORES bf16 - fp32 (NLL per token) | task mean fp32 / bf16 | bf16 - fp32 | eval s fp32 / bf16 |",
        "|---|---:|---:|---|---:|---|---|---|---:|",
    ]
    for name, row in results["rows"].items():
        fp32, bf16, comparison = row["fp32"], row["bf16 autocast"], row["comparison"]
        tasks = (
            f"{task_mean(fp32['tasks']):.3f} / {task_mean(bf16['tasks']):.3f} | {verdict_text(comparison['task_mean'])}"
            if fp32["tasks"]
            else "- | -"
        )
        lines.append(
            f"| {name} | {fp32['wikitext']['perplexity']:.2f} | {bf16['wikitext']['perplexity']:.2f} | "
            f"{verdict_text(comparison['wikitext'])} | {comparison['flores']['mean_ratio']:.4f} | {flores_versus(fp32, bf16)} | {tasks} | "
            f"{fp32['wall_seconds']:.0f} / {bf16['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tasks", default="none", help="comma-separated zero-shot tasks, or 'none'")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--name", default="eval_precision")
    args = parser.parse_args()
    settings = StandardEvaluation(
        data_dir=str(SHARED),
        wikitext=args.wikitext,
        tasks=() if args.tasks == "none" else tuple(args.tasks.split(",")),
        items_per_task=args.items,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "model": args.model,
        "commit": git_commit(),
        "command": "python benchmarks/eval_precision.py" + (f" --tasks {args.tasks}" if args.tasks != "none" else ""),
        "evaluation": dataclasses.asdict(settings),
        "rows": {},
    }
    loaded = load_model(args.model, dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    results["rows"]["dense"] = evaluate_both(dense, tokenizer, settings)
    write_json(out, args.name, results)
    windows = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=16, seq_len=512)
    pruned = prunekit.prune(dense, "angular", windows, remove=6, progress=False).model
    results["rows"]["angular 6 of 30, no recovery"] = evaluate_both(pruned, tokenizer, settings)
    write_json(out, args.name, results)
    write_table(out, args.name, markdown(results))


if __name__ == "__main__":
    main()
