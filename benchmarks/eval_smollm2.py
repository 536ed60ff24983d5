"""Dense embedded SmolLM2-135M on every local zero-shot task and WikiText-2, with time per task.

Writes benchmarks/results/eval_smollm2.{json,md}. Full sets by default; `--limit N` for a quicker run
(the README says which was used).

    python benchmarks/eval_smollm2.py --data-dir ../shared/data [--limit 500]
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path

from prunekit import load_model
from prunekit.evaluation.suite import EvaluationRequest, evaluate_model
from prunekit.evaluation.tasks import DEFAULT_TASKS

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", default=str(SHARED))
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--limit", type=int, help="items per task (default: full sets)")
    parser.add_argument("--ppl-windows", type=int, help="WikiText-2 windows of 512 tokens (default: the whole test set)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load_model(args.model, device="cpu", dtype="float32")
    request = EvaluationRequest(
        ppl=[str(Path(args.data_dir) / "wikitext-2-raw-v1" / "wiki.test.raw")],
        seq_len=512,
        ppl_windows=args.ppl_windows,  # None: the whole test set
        tasks=args.tasks.split(","),
        data_dir=args.data_dir,
        limit=args.limit,
        task_batch_size=args.batch_size,
    )
    results = evaluate_model(loaded, request, device="cpu", label="SmolLM2-135M dense (fp32)")
    results["wall_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_smollm2.json").write_text(json.dumps(results, indent=2) + "\n")
    ppl = next(iter(results["perplexity"].values()))
    lines = [
        f"SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32), CPU (2 cores), lm-eval {version('lm_eval')}, "
        f"batch {args.batch_size}; {'full sets' if args.limit is None else f'first {args.limit} items per task'}.",
        "",
        "| task | items | acc | acc_norm | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for task, values in results["tasks"].items():
        lines.append(
            f"| {task} | {values.get('items')} | {values.get('acc', float('nan')):.4f} | "
            f"{values['acc_norm']:.4f} | {values['seconds']:.0f} |"
            if "acc_norm" in values
            else f"| {task} | {values.get('items')} | {values.get('acc', float('nan')):.4f} | - | {values['seconds']:.0f} |"
        )
    lines += [
        "",
        f"WikiText-2 test perplexity (seq 512, {ppl['windows']} windows, {ppl['predicted_tokens']} predicted tokens): "
        f"{ppl['perplexity']:.2f}, {ppl['seconds']:.0f} s. Total wall time {results['wall_seconds']:.0f} s.",
    ]
    (out / "eval_smollm2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
