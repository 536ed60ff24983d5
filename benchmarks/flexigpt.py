"""FlexiGPT against ShortGPT on the embedded SmolLM2-135M: 9 of 30 blocks (30%), same training budget.

Contenders:
  shortgpt            BI removal, no training
  shortgpt+lora       BI removal, then LoRA (rank --lora-rank on every remaining block) distillation
  flexigpt            BI-chosen blocks replaced by low-rank-distance-chosen shared blocks + SVD-initialised
                      rank-r adapters + output normalisation; adapters and scales trained
  ablations           flexigpt without output normalisation, without SVD initialisation, and with the
                      plain Frobenius distance for choosing the shared block
Training: KL distillation from the dense model on C4 windows (the same windows for everyone).
Reports WikiText-2 perplexity before and after training, zero-shot tasks with --limit, parameter
counts (shared weights once) and decode tokens/s. JSON is rewritten after every contender.

    python benchmarks/flexigpt.py --budget 50000
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from prunekit import load_model, load_windows, perplexity
from prunekit.evaluation.speed import measure_speed
from prunekit.evaluation.tasks import DEFAULT_TASKS, run_tasks
from prunekit.methods.flexigpt import default_rank, replace_blocks
from prunekit.methods.iterabre import dense_teacher
from prunekit.methods.shortgpt import lowest_scoring
from prunekit.models.adapters import parameter_count
from prunekit.recovery import RecoveryConfig, recover, recovery_windows
from prunekit.scoring.blocks import scan_blocks

from _common import SHARED, benchmark_parser, write_json, write_table

CONTENDERS = {
    "shortgpt": None,
    "shortgpt+lora": {"lora": True},
    "flexigpt": {},
    "flexigpt no output norm": {"output_norm": None},
    "flexigpt no SVD init": {"svd_init": False},
    "flexigpt Frobenius distance": {"distance": "frobenius"},
}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--remove", type=int, default=9)
    parser.add_argument("--budget", type=int, default=50_000, help="training tokens per contender")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS))
    parser.add_argument("--eval-windows", type=int, default=48)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate for adapters and LoRA alike")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--norm-scale", type=float, default=0.01)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--name", default="flexigpt")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]

    loaded = load_model(args.model, device="cpu", dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    calibration = load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=args.calib_windows, seq_len=512)
    wikitext = load_windows(args.wikitext, tokenizer, purpose="evaluation", num_windows=args.eval_windows, seq_len=512)
    data = recovery_windows(args.calibration, tokenizer, num_tokens=args.budget, seq_len=512, seed=0) if args.budget else None
    scores = scan_blocks(dense, calibration, "bi", progress=False)
    removed = lowest_scoring(scores.scores, args.remove)
    teacher = dense_teacher(dense)

    def evaluate(model) -> dict:
        speed = measure_speed(model, prompt_tokens=128, new_tokens=32, repeats=2)
        return {
            "params": parameter_count(model),
            "wikitext2": perplexity(model, wikitext, progress=False).perplexity,
            "decode_tokens_per_second": speed.decode_tokens_per_second,
            "weight_bytes": speed.weight_bytes,
            "tasks": run_tasks(model, tokenizer, tasks, data_dir=SHARED, limit=args.limit, progress=False) if tasks else {},
        }

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "model": args.model,
        "removed": removed,
        "budget": args.budget,
        "lr": args.lr,
        "limit": args.limit,
        "rank": default_rank(dense.config),
        "lora_rank": args.lora_rank,
        "norm_scale": args.norm_scale,
        "wikitext": wikitext.summary(),
        "dense": evaluate(dense),
        "rows": [],
    }
    print(f"dense: ppl {results['dense']['wikitext2']:.2f}; removing {removed}", flush=True)
    for name in args.contenders:
        options = CONTENDERS[name]
        model = copy.deepcopy(dense)
        started = time.perf_counter()
        row: dict = {"contender": name}
        if options is not None and not options.get("lora"):
            record = replace_blocks(
                model,
                removed,
                output_norm=options.get("output_norm", args.norm_scale),
                svd_init=options.get("svd_init", True),
                distance=options.get("distance", "low-rank"),
                progress=False,
            )
            row["shares_with"] = record["shares_with"]
            row["own_parameters_fraction_of_block"] = record["own_parameters_fraction_of_block"]
            scope = "adapters"
        else:
            from prunekit.models.surgery import remove_blocks

            remove_blocks(model, removed)
            scope = "lora"
        row["ppl_before_training"] = perplexity(model, wikitext, progress=False).perplexity
        row["setup_seconds"] = time.perf_counter() - started
        if options is not None and args.budget:
            config = RecoveryConfig(
                tokens=args.budget,
                seq_len=512,
                learning_rate=args.lr,
                precision=args.precision,
                scope=scope,
                lora_rank=args.lora_rank,
                lora_alpha=2.0 * args.lora_rank,
                grad_accumulation=4,
            )
            result = recover(model, data, config, teacher=teacher, progress=False)
            row.update(
                trainable_parameters=result.trainable_parameters,
                train_seconds=result.seconds,
                train_tokens=result.tokens,
                loss_first=result.loss_first,
                loss_last=result.loss_last,
            )
        row.update(evaluate(model))
        results["rows"].append(row)
        print(f"{name}: ppl {row['ppl_before_training']:.2f} -> {row['wikitext2']:.2f}", flush=True)
        write_json(out, args.name, results)
        del model
    write_table(out, args.name, markdown(results, tasks))


def markdown(results: dict, tasks: list[str]) -> str:
    dense = results["dense"]
    lines = [
        f"`{results['model']}` fp32 on CPU, blocks {results['removed']} (BI) removed or replaced; "
        f"{results['budget']:,} training tokens of C4 per trained contender (KL distillation, lr {results['lr']}, cosine); "
        f"FlexiGPT rank {results['rank']}, output-norm scale {results['norm_scale']}; ShortGPT+LoRA rank {results['lora_rank']}; "
        f"WikiText-2 {results['wikitext']['windows']}x512; tasks limited to {results['limit']} items.",
        "",
        "| contender | params (M) | trainable (M) | ppl before training | ppl after | "
        + " | ".join(tasks)
        + " | task mean | decode tok/s |",
        "|---|---:|---:|---:|---:|" + "---:|" * (len(tasks) + 2),
    ]

    def acc(entry, task):
        values = entry["tasks"][task]
        return values.get("acc_norm", values.get("acc"))

    def line(label, entry, before, trainable):
        accs = [acc(entry, t) for t in tasks]
        mean = sum(accs) / len(accs) if accs else float("nan")
        return (
            f"| {label} | {entry['params'] / 1e6:.1f} | {trainable} | {before} | {entry['wikitext2']:.2f} | "
            + " | ".join(f"{a:.3f}" for a in accs)
            + f" | {mean:.3f} | {entry['decode_tokens_per_second']:.0f} |"
        )

    lines.append(line("dense", dense, "-", "-"))
    for row in results["rows"]:
        trainable = f"{row['trainable_parameters'] / 1e6:.2f}" if "trainable_parameters" in row else "0"
        lines.append(line(row["contender"], row, f"{row['ppl_before_training']:.2f}", trainable))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
