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

import time
from pathlib import Path

import prunekit
from prunekit import FlexiGPTConfig, RecoveryConfig, load_model, load_windows, parameter_count, perplexity
from prunekit.evaluation.speed import measure_speed
from prunekit.evaluation.tasks import DEFAULT_TASKS, run_tasks
from prunekit.models.shared_blocks import fuse_for_inference
from prunekit.recovery import recovery_windows

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
    removed = prunekit.prune(dense, "shortgpt", calibration, remove=args.remove, progress=False).plan.removed_blocks

    def evaluate(model) -> dict:
        speed = measure_speed(model, prompt_tokens=128, new_tokens=32, repeats=2)
        fused = {}
        if fuse_for_inference(model):  # shared blocks: decode again with base + B A as one matmul per linear
            fused["decode_tokens_per_second_fused"] = measure_speed(
                model, prompt_tokens=128, new_tokens=32, repeats=2
            ).decode_tokens_per_second
            fuse_for_inference(model, False)
        return {
            **fused,
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
        "rank": max(1, dense.config.hidden_size // 16),  # FlexiGPTConfig's default rank
        "lora_rank": args.lora_rank,
        "norm_scale": args.norm_scale,
        "wikitext": wikitext.summary(),
        "dense": evaluate(dense),
        "rows": [],
    }
    print(f"dense: ppl {results['dense']['wikitext2']:.2f}; removing {removed}", flush=True)
    for name in args.contenders:
        options = CONTENDERS[name]
        started = time.perf_counter()
        row: dict = {"contender": name}
        if options is not None and not options.get("lora"):
            config = FlexiGPTConfig(
                remove=args.remove,
                recovery=None,
                output_norm=options.get("output_norm", args.norm_scale),
                svd_init=options.get("svd_init", True),
                distance=options.get("distance", "low-rank"),
            )
            replaced = prunekit.prune(dense, config, calibration, progress=False)
            model, record = replaced.model, replaced.plan.details()
            row["shares_with"] = record["shares_with"]
            row["own_parameters_fraction_of_block"] = record["own_parameters_fraction_of_block"]
            scope = "adapters"
        else:
            model = prunekit.prune(dense, "shortgpt", calibration, remove=args.remove, progress=False).model
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
            trained = prunekit.prune(model, config, teacher=dense, recovery_data=data, inplace=True, progress=False).plan.details()
            row.update(
                trainable_parameters=trained["trainable_parameters"],
                train_seconds=trained["seconds"],
                train_tokens=trained["tokens"],
                loss_first=trained["loss_first"],
                loss_last=trained["loss_last"],
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
        + " | task mean | decode tok/s | fused decode tok/s |",
        "|---|---:|---:|---:|---:|" + "---:|" * (len(tasks) + 3),
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
            + f" | {mean:.3f} | {entry['decode_tokens_per_second']:.0f} | "
            + (f"{entry['decode_tokens_per_second_fused']:.0f} |" if "decode_tokens_per_second_fused" in entry else "- |")
        )

    lines.append(line("dense", dense, "-", "-"))
    for row in results["rows"]:
        trainable = f"{row['trainable_parameters'] / 1e6:.2f}" if "trainable_parameters" in row else "0"
        lines.append(line(row["contender"], row, f"{row['ppl_before_training']:.2f}", trainable))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
