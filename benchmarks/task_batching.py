"""How much batching lm-eval's requests speeds up the zero-shot tasks on the embedded model (issue 15).

Scores the same items of each task at batch size 1 and at larger batch sizes, one after another under
the same load, and reports seconds per task, the speed-up over batch 1 and whether every item's score is unchanged.
Writes benchmarks/results/task_batching.{json,md}.

    python benchmarks/task_batching.py --limit 100
"""

from __future__ import annotations

from pathlib import Path

from prunekit import load_model
from prunekit.evaluation.standard import PAPER_TASKS
from prunekit.evaluation.tasks import run_tasks

from _common import SHARED, benchmark_parser, git_commit, write_json, write_table


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--tasks", default=",".join(PAPER_TASKS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--name", default="task_batching")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    loaded = load_model(args.model, device="cpu", dtype="float32")
    commit = git_commit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": args.model, "commit": commit, "limit": args.limit, "batch_sizes": args.batch_sizes, "tasks": {}}
    for task in tasks:
        runs = {}
        for size in args.batch_sizes:
            scored = run_tasks(
                loaded.model, loaded.tokenizer, [task], data_dir=SHARED, limit=args.limit, batch_size=size, progress=False, item_scores=True
            )
            runs[size] = scored[task]
        reference = runs[args.batch_sizes[0]]["item_scores"]
        results["tasks"][task] = {
            str(size): {
                "seconds": r["seconds"],
                "items": r["items"],
                "speedup": runs[args.batch_sizes[0]]["seconds"] / r["seconds"],
                "same_scores": r["item_scores"] == reference,
            }
            for size, r in runs.items()
        }
        write_json(out, args.name, results)
        print(task, {s: round(v["seconds"], 1) for s, v in results["tasks"][task].items()}, flush=True)
    write_table(out, args.name, markdown(results))


def markdown(results: dict) -> str:
    sizes = [str(s) for s in results["batch_sizes"]]
    lines = [
        f"`{results['model']}` fp32 on CPU (2 cores), lm-eval, first {results['limit']} items per task, commit {results['commit']}. "
        "Command: `python benchmarks/task_batching.py --limit " + str(results["limit"]) + "`.",
        "",
        "| task | "
        + " | ".join(f"batch {s} (s)" for s in sizes)
        + " | "
        + " | ".join(f"speed-up x{s}" for s in sizes[1:])
        + " | same item scores |",
        "|---|" + "---:|" * (2 * len(sizes) - 1) + "---|",
    ]
    totals = {s: 0.0 for s in sizes}
    for task, runs in results["tasks"].items():
        for s in sizes:
            totals[s] += runs[s]["seconds"]
        lines.append(
            f"| {task} | "
            + " | ".join(f"{runs[s]['seconds']:.1f}" for s in sizes)
            + " | "
            + " | ".join(f"{runs[s]['speedup']:.2f}" for s in sizes[1:])
            + f" | {'yes' if all(runs[s]['same_scores'] for s in sizes) else 'no'} |"
        )
    lines.append(
        "| all | "
        + " | ".join(f"{totals[s]:.1f}" for s in sizes)
        + " | "
        + " | ".join(f"{totals[sizes[0]] / totals[s]:.2f}" for s in sizes[1:])
        + " | |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
