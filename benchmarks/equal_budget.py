"""Block-removal methods side by side at one recovery budget, ranked with paired standard errors (issue 15).

Every contender removes the same number of blocks of the embedded SmolLM2-135M and trains on the same
C4 windows, in the same order, for the same number of tokens; then every contender gets the one
standard evaluation (`prunekit.evaluation.standard`): WikiText-2 perplexity with per-window NLLs,
optionally the zero-shot tasks with per-item scores, and FLORES per-language perplexity. Each row says
whether it is better, worse or tied with the reference contender (the first one) beyond two paired
standard errors.

Tables (`--table`):
  iterabre  6 of 30 blocks: one-shot ShortGPT / angular / SLEB + one recovery, against IteRABRe variants
            (metric inside the loop, scan windows, learning-rate schedule, final-pass share, scope)
  flexigpt  9 (or `--remove`) of 30 blocks: ShortGPT + LoRA of about the same trainable size, against
            FlexiGPT variants (learning rate, output-norm initialisation, scale learning rate)
  extend    nothing removed: the model grown from 30 to 36 blocks (repeats spread over the depth, or the
            last six repeated) against continued training of the dense 30-block model on the same tokens
            (all weights, or LoRA with the extension's trainable-parameter count), all on the next-token
            loss; each row also reports its size on disk and its decode speed

Rows are written to JSON as they finish; running the same command again skips the finished rows, so an
interrupted run resumes. Each row's training saves checkpoints under `--runs` (about every ten minutes), so
a row killed mid-training continues from its last checkpoint, not from zero. A contender whose training
diverges is recorded as diverged, with its learning rate.

`--recovery-data c4-train` streams every C4 training document of the shared data (the train files and
the validation sample, never the 1,000 validation documents the evaluation scores) instead of the
in-memory windows of `--calibration`.

    python benchmarks/equal_budget.py --table iterabre --budget 50000 --tasks none    # screening
    python benchmarks/equal_budget.py --table iterabre --budget 200000 --contenders shortgpt+rec iterabre
    python benchmarks/equal_budget.py --table iterabre --budget 2500000 --recovery-data c4-train \\
        --contenders 'angular+rec lr 3e-4' 'iterabre lr 3e-4' 'iterabre bi final 1.0 lr 3e-4'
    python benchmarks/equal_budget.py --table extend --budget 200000 --recovery-data c4-train
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import prunekit
from prunekit import RecoveryConfig, load_model, load_windows, parameter_count
from prunekit.evaluation.speed import disk_size, measure_speed
from prunekit.evaluation.standard import (
    PAPER_TASKS,
    StandardEvaluation,
    compare_results,
    evaluate_standard,
    mean_difference,
    task_mean,
)
from prunekit.models.export import save_model
from prunekit.recovery import recovery_windows, self_generated_windows
from prunekit.recovery.data import SELF_GENERATED
from prunekit.recovery.trainer import RecoveryDiverged
from prunekit.recovery.window_stream import streamed_windows

from _common import SHARED, benchmark_parser, flores_versus, git_commit, refuse, verdict_text, write_json, write_table

PAPER_LOOP = {"metric": "removal-cosine", "final_share": 0.0, "schedule": "restart"}
LORA_16 = {"scope": "lora", "lora_rank": 16, "lora_alpha": 32.0}  # ShortGPT + LoRA: about FlexiGPT's trainable size at 9/30
ADAPTERS = {"scope": "adapters"}  # FlexiGPT's own adapters and output-norm scales
FLEXIGPT_RATES = {"learning_rate": 4e-3, "norm_scale_learning_rate": 1e-1}  # its best measured rates (the rows name them)

# The WikiText-2 test split past the windows the evaluation scores: in-domain text for the data ablation
# (WikiText-2 train is not on this machine), disjoint from every scored token.
WIKITEXT_REST = "wikitext-rest"
DATA_LABELS = {SELF_GENERATED: "self-generated", WIKITEXT_REST: "wikitext-2 test past the scored windows"}

# name: (method, method options, recovery overrides, scan windows[, recovery data: C4 unless SELF_GENERATED or WIKITEXT_REST])
ITERABRE_TABLE = {
    "shortgpt+rec": ("shortgpt", {}, {}, 16),
    # Control: IteRABRe's blocks (bi, continuous, final 0.5 at 6/30 removed these) cut in one shot, then the same recovery,
    # to tell whether a gap comes from which blocks go or from spreading the budget over the removals.
    "iterabre blocks one-shot+rec": ("shortgpt", {"protect": tuple(i for i in range(30) if i not in (12, 13, 14, 15, 17, 25))}, {}, 16),
    "angular+rec": ("angular", {}, {}, 16),
    "sleb+rec": ("sleb", {}, {}, 4),
    # Recovery kind and learning rate for the best one-shot method (LoRA won inside IteRABRe at 50k).
    "angular+lora": ("angular", {}, {**LORA_16, "learning_rate": 4e-3}, 16),
    "angular+rec lr 3e-4": ("angular", {}, {"learning_rate": 3e-4}, 16),
    "angular+rec lr 1e-3": ("angular", {}, {"learning_rate": 1e-3}, 16),
    # The paper's loop (removal-cosine, recovery after every removal), the defaults before the 50k screening;
    # its ablations below keep those settings explicitly so that their rows mean what they meant then.
    "iterabre": ("iterabre", PAPER_LOOP, {}, 4),
    "iterabre bi": ("iterabre", {**PAPER_LOOP, "metric": "bi"}, {}, 4),
    "iterabre continuous": ("iterabre", {**PAPER_LOOP, "schedule": "continuous"}, {}, 4),
    "iterabre final 0.5": ("iterabre", {**PAPER_LOOP, "final_share": 0.5}, {}, 4),
    "iterabre continuous final 0.5": ("iterabre", {**PAPER_LOOP, "schedule": "continuous", "final_share": 0.5}, {}, 4),
    "iterabre bi continuous final 0.5": ("iterabre", {**PAPER_LOOP, "metric": "bi", "schedule": "continuous", "final_share": 0.5}, {}, 4),
    "iterabre removal-loss": ("iterabre", {**PAPER_LOOP, "metric": "removal-loss"}, {}, 4),
    "iterabre 16 windows": ("iterabre", PAPER_LOOP, {}, 16),
    "iterabre neighbours": ("iterabre", PAPER_LOOP, {"scope": "neighbours"}, 4),
    "iterabre lora": ("iterabre", PAPER_LOOP, {"scope": "lora", "learning_rate": 1e-3}, 4),
    # The paper's loop, and BI with a recovery after every removal, at the best measured lr (3e-4): does
    # recovering between removals pay once each iteration gets 33k tokens (200k budget)?
    "iterabre lr 3e-4": ("iterabre", PAPER_LOOP, {"learning_rate": 3e-4}, 4),
    "iterabre bi lr 3e-4": ("iterabre", {**PAPER_LOOP, "metric": "bi"}, {"learning_rate": 3e-4}, 4),
    # Today's defaults (bi re-scored after every removal, one recovery at the end) and their ablations.
    "iterabre bi final 1.0": ("iterabre", {"metric": "bi", "final_share": 1.0}, {}, 4),
    "iterabre bi final 1.0 16 windows": ("iterabre", {"metric": "bi", "final_share": 1.0}, {}, 16),
    "iterabre bi final 1.0 lr 3e-4": ("iterabre", {"metric": "bi", "final_share": 1.0}, {"learning_rate": 3e-4}, 4),
    # angular inside the loop scores each block alone (span 1: arccos of the cosine between its input and output)
    "iterabre angular final 1.0": ("iterabre", {"metric": "angular", "final_share": 1.0}, {}, 4),
    "iterabre removal-loss final 1.0": ("iterabre", {"metric": "removal-loss", "final_share": 1.0}, {}, 4),
    "iterabre removal-cosine final 1.0": ("iterabre", {"metric": "removal-cosine", "final_share": 1.0}, {}, 4),
    # Recovery scope and data on today's defaults (WikiText-2 train is not on this machine, so the data
    # ablation is C4 against text sampled from the dense model and the unscored rest of WikiText-2 test).
    "iterabre bi final 1.0 neighbours": ("iterabre", {"metric": "bi", "final_share": 1.0}, {"scope": "neighbours"}, 4),
    "iterabre bi final 1.0 lora": ("iterabre", {"metric": "bi", "final_share": 1.0}, {**LORA_16, "learning_rate": 4e-3}, 4),
    "iterabre bi final 1.0 self-generated": ("iterabre", {"metric": "bi", "final_share": 1.0}, {}, 4, SELF_GENERATED),
    "angular+rec self-generated": ("angular", {}, {}, 16, SELF_GENERATED),
    "iterabre bi final 1.0 wikitext": ("iterabre", {"metric": "bi", "final_share": 1.0}, {}, 4, WIKITEXT_REST),
    "angular+rec wikitext": ("angular", {}, {}, 16, WIKITEXT_REST),
}
FLEXIGPT_TABLE = {
    "shortgpt+lora": ("shortgpt", {}, LORA_16, 16),
    "shortgpt+lora lr 4e-3": ("shortgpt", {}, {**LORA_16, "learning_rate": 4e-3}, 16),
    "shortgpt+lora lr 1e-2": ("shortgpt", {}, {**LORA_16, "learning_rate": 1e-2}, 16),
    # 'flexigpt' trains at the table's lr (1e-3, also for the scales), not at the method's defaults; those
    # (adapters 4e-3, scales 1e-1: the best measured recipe) are 'flexigpt lr 4e-3 scale lr 1e-1'.
    "flexigpt": ("flexigpt", {}, ADAPTERS, 16),
    "flexigpt lr 4e-3": ("flexigpt", {}, {**ADAPTERS, "learning_rate": 4e-3}, 16),
    "flexigpt measured": ("flexigpt", {"output_norm": "measured"}, ADAPTERS, 16),
    "flexigpt lr 4e-3 scale lr 4e-2": ("flexigpt", {}, {**ADAPTERS, "learning_rate": 4e-3, "norm_scale_learning_rate": 4e-2}, 16),
    "flexigpt lr 4e-3 scale lr 1e-1": ("flexigpt", {}, {**ADAPTERS, **FLEXIGPT_RATES}, 16),
    "flexigpt lr 4e-3 scale lr 3e-1": ("flexigpt", {}, {**ADAPTERS, "learning_rate": 4e-3, "norm_scale_learning_rate": 3e-1}, 16),
    "flexigpt lr 1e-2 scale lr 1e-1": ("flexigpt", {}, {**ADAPTERS, "learning_rate": 1e-2, "norm_scale_learning_rate": 1e-1}, 16),
    "flexigpt measured scale lr 1e-2": (
        "flexigpt",
        {"output_norm": "measured"},
        {**ADAPTERS, "norm_scale_learning_rate": 1e-2},
        16,
    ),
}
# Growth is trained on the next-token loss (there is no larger teacher). LoRA rank 7 on every linear weight of the
# 30 blocks trains 2.14M parameters, the extension's six repeats 2.21M (rank 36 adapters and output-norm scales).
NEXT_TOKEN = {"kd_weight": 0.0, "lm_weight": 1.0}
GROW = {"to_blocks": 36}
DENSE_LORA = {"scope": "lora", "lora_rank": 7, "lora_alpha": 14.0}
EXTEND_TABLE = {
    "extend block": ("extend", {**GROW, "pattern": "block"}, {**NEXT_TOKEN, **ADAPTERS}, 4),
    "extend sequential": ("extend", {**GROW, "pattern": "sequential"}, {**NEXT_TOKEN, **ADAPTERS}, 4),
    "dense+full": ("recover", {}, {**NEXT_TOKEN, "scope": "full"}, 4),
    "dense+lora": ("recover", {}, {**NEXT_TOKEN, **DENSE_LORA}, 4),
    # The rows above train at the table's 1e-4 (extension's former default, never tuned); these at more: FlexiGPT's
    # measured rates (adapters 4e-3, the output-norm scales, which start at 0.01, 1e-1; extension's default since),
    # and LoRA's and full weights' defaults (4e-3; 3e-4 below 1B)
    "extend block lr 1e-3": ("extend", {**GROW, "pattern": "block"}, {**NEXT_TOKEN, **ADAPTERS, "learning_rate": 1e-3}, 4),
    "extend block lr 4e-3 scale lr 1e-1": ("extend", {**GROW, "pattern": "block"}, {**NEXT_TOKEN, **ADAPTERS, **FLEXIGPT_RATES}, 4),
    "extend sequential lr 4e-3 scale lr 1e-1": (
        "extend",
        {**GROW, "pattern": "sequential"},
        {**NEXT_TOKEN, **ADAPTERS, **FLEXIGPT_RATES},
        4,
    ),
    # the grown model's adapters at the lower rate that won for the dense LoRA at 1M (its scales keep 1e-1: they must grow)
    "extend block lr 1e-3 scale lr 1e-1": (
        "extend",
        {**GROW, "pattern": "block"},
        {**NEXT_TOKEN, **ADAPTERS, **FLEXIGPT_RATES, "learning_rate": 1e-3},
        4,
    ),
    "dense+full lr 3e-4": ("recover", {}, {**NEXT_TOKEN, "scope": "full", "learning_rate": 3e-4}, 4),
    "dense+lora lr 1e-3": ("recover", {}, {**NEXT_TOKEN, **DENSE_LORA, "learning_rate": 1e-3}, 4),
    "dense+lora lr 4e-3": ("recover", {}, {**NEXT_TOKEN, **DENSE_LORA, "learning_rate": 4e-3}, 4),
}
TABLES = {"iterabre": (ITERABRE_TABLE, 6, 1e-4), "flexigpt": (FLEXIGPT_TABLE, 9, 1e-3), "extend": (EXTEND_TABLE, 0, 1e-4)}
FOOTPRINT_TABLES = ("extend",)  # tables whose rows also report disk size and decode speed
C4_TRAIN = "c4-train"
IN_MEMORY = "c4 (--calibration, in memory)"
SETTINGS = ("table", "model", "remove", "budget", "seed", "recovery", "recovery_data", "evaluation")  # a resumed run keeps them
UNRECORDED = {"recovery_data": IN_MEMORY}  # runs from before a setting was recorded ran with its default
C4_TRAIN_FILES = (
    "c4-train.00000-of-01024.first1000.jsonl",
    "c4-train.rp-sample2.1000docs.jsonl",
    "c4-validation.sample.part1of2.jsonl",
    "c4-validation.sample.part2of2.jsonl",
)


def c4_training_shards(runs: Path) -> str:
    """A directory of links to the C4 files that may be trained on (the evaluation's documents are not among them)."""
    shards = runs / "c4-train-shards"
    shards.mkdir(parents=True, exist_ok=True)
    for name in C4_TRAIN_FILES:
        link = shards / name
        if not link.exists():
            link.symlink_to((SHARED / "c4" / name).resolve())
    return str(shards)


class RowClock:
    """Seconds a row has run over all the processes that ran it, saved every minute in its run directory, so the wall
    time of a row that was killed and resumed counts every process (up to a minute of each killed one may be lost)."""

    def __init__(self, run_dir: Path, every: float = 60.0):
        self.path, self.every = run_dir / "row_seconds.json", every
        self.before = json.loads(self.path.read_text())["seconds"] if self.path.exists() else 0.0
        self.started = time.perf_counter()
        self.stopped = threading.Event()
        threading.Thread(target=self._save_every_minute, daemon=True).start()

    def total(self) -> float:
        return self.before + time.perf_counter() - self.started

    def _save_every_minute(self) -> None:
        while not self.stopped.wait(self.every):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seconds": self.total()}))
            tmp.replace(self.path)

    def stop(self) -> float:
        self.stopped.set()
        return self.total()


def slug(contender: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in contender)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--table", choices=list(TABLES), default="iterabre")
    parser.add_argument("--remove", type=int, help="blocks removed (default: 6 for iterabre, 9 for flexigpt)")
    parser.add_argument("--budget", type=int, default=200_000, help="recovery tokens per contender (in total)")
    parser.add_argument("--contenders", nargs="+", help="names from the table (default: all); the first is the reference")
    parser.add_argument("--lr", type=float, help="peak learning rate unless a contender sets its own (default: 1e-4 / 1e-3)")
    parser.add_argument("--tasks", default=",".join(PAPER_TASKS), help="comma-separated zero-shot tasks, or 'none'")
    parser.add_argument("--items", type=int, default=500, help="items per zero-shot task")
    parser.add_argument("--eval-windows", type=int, default=48, help="512-token windows of WikiText-2 and of C4 validation scored")
    parser.add_argument("--precision", default="bf16", help="recovery precision (bf16 autocast is ~1.6x faster on this CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the recovery data order")
    parser.add_argument("--name", help="output file name (default: equal_budget_<table>_<budget>)")
    parser.add_argument("--device", default="cpu", help="where pruning, recovery and evaluation run (e.g. cuda for GPU-sized budgets)")
    parser.add_argument(
        "--recovery-data",
        help=f"streamed data SPEC, or '{C4_TRAIN}' for every C4 training file (default: --calibration, in memory)",
    )
    parser.add_argument("--runs", help="where each row's training checkpoints live (default: benchmarks/runs/<name>)")
    parser.add_argument(
        "--dense-from",
        metavar="NAME",
        help="take the untrained dense model's row from the table NAME in --out (same model, table and evaluation) "
        "instead of evaluating it again",
    )
    parser.add_argument("--save-every", type=int, help="recovery tokens between checkpoints (default: about ten minutes)")
    args = parser.parse_args()
    table, default_remove, default_lr = TABLES[args.table]
    if args.remove and not default_remove:
        refuse(f"the {args.table} table removes no blocks; drop --remove")
    remove = args.remove or default_remove
    names = args.contenders or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        refuse(f"unknown contender '{unknown[0]}'; the {args.table} table has: {', '.join(table)}")
    name = args.name or f"equal_budget_{args.table}_{f'{remove}_' if remove else ''}{args.budget // 1000}k"
    tasks = () if args.tasks == "none" else tuple(t for t in args.tasks.split(",") if t)
    settings = StandardEvaluation(
        data_dir=str(SHARED),
        wikitext=args.wikitext,
        wikitext_windows=args.eval_windows,
        c4_windows=args.eval_windows,
        tasks=tasks,
        items_per_task=args.items,
        device=args.device,
    )
    recovery = RecoveryConfig(
        tokens=args.budget, seq_len=512, learning_rate=args.lr or default_lr, precision=args.precision, grad_accumulation=4, seed=args.seed
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs) if args.runs else Path(__file__).parent / "runs" / name
    streamed = c4_training_shards(runs) if args.recovery_data == C4_TRAIN else args.recovery_data
    header = {
        "table": args.table,
        "model": args.model,
        "remove": remove,
        "budget": args.budget,
        "seed": args.seed,
        "recovery": recovery.to_dict(),
        "recovery_data": args.recovery_data or IN_MEMORY,
        "evaluation": dataclasses.asdict(settings),
        "command": "python benchmarks/equal_budget.py " + " ".join(_quoted(a) for a in sys.argv[1:]),
    }
    results = _resumed(out / f"{name}.json", header)
    if "dense" not in results and args.dense_from:  # checked before the model loads: a wrong NAME fails at once
        results["dense"] = _dense_from(out / f"{args.dense_from}.json", header)
        write_json(out, name, results)
    loaded = load_model(args.model, device=args.device, dtype="float32")
    dense, tokenizer = loaded.model, loaded.tokenizer
    if streamed:
        recovery_data = {None: streamed}
        if "data_tokens" not in results:  # the header's passes over the data, for every kind of row alike
            results["data_tokens"] = tokens_per_pass(streamed, tokenizer)
            write_json(out, name, results)
    else:
        recovery_data = {None: recovery_windows(args.calibration, tokenizer, num_tokens=args.budget, seq_len=512, seed=args.seed)}
    windows = {
        n: load_windows(args.calibration, tokenizer, purpose="calibration", num_windows=n, seq_len=512, seed=1 if n == 4 else 0)
        for n in (4, 16)
    }
    if "dense" not in results:
        results["dense"] = {"params": parameter_count(dense), **evaluate_standard(dense, tokenizer, settings)}
        if args.table in FOOTPRINT_TABLES:
            results["dense"]["footprint"] = footprint(dense, tokenizer)
        write_json(out, name, results)
    done = {row["contender"] for row in results["rows"]}
    self_generated_seconds = None  # the dense model samples its text once, when a contender asks
    for contender in names:
        if contender in done:
            print(f"{contender}: finished in an earlier run, kept", flush=True)
            continue
        method, options, overrides, scan_windows, *kind = table[contender]
        data = kind[0] if kind else None
        config = dataclasses.replace(recovery, **overrides)
        if data == SELF_GENERATED and data not in recovery_data:
            generation_started = time.perf_counter()
            recovery_data[data] = self_generated_windows(
                dense, tokenizer, num_tokens=args.budget, seq_len=512, seed=args.seed, progress=False
            )
            self_generated_seconds = time.perf_counter() - generation_started
            print(f"self-generated {recovery_data[data].num_tokens} tokens in {self_generated_seconds:.0f} s", flush=True)
        if data == WIKITEXT_REST and data not in recovery_data:
            scored = settings.wikitext_windows * settings.seq_len
            recovery_data[data] = recovery_windows(
                settings.wikitext_path, tokenizer, num_tokens=args.budget, seq_len=512, seed=args.seed, skip_tokens=scored
            )
        row = {
            "contender": contender,
            "commit": git_commit(),
            "method": method,
            "options": options,
            "recovery": dataclasses.asdict(config),
            "scan_windows": scan_windows,
            "recovery_data": DATA_LABELS.get(data, "c4"),
        }
        run_dir = runs / slug(contender)
        resumed = run_dir.exists()
        clock = RowClock(run_dir)
        try:
            result = prunekit.prune(
                dense,
                method,
                windows[scan_windows],
                recovery=config,
                recovery_data=recovery_data[data],
                tokenizer=tokenizer,
                **({"remove": remove} if remove else {}),
                device=args.device,
                progress=False,
                run_dir=run_dir,
                resume=resumed,
                save_every=args.save_every,
                **options,
            )
        except RecoveryDiverged as error:
            row.update(
                diverged=True,
                learning_rate=error.learning_rate,
                step=error.step,
                error=str(error),
                prune_seconds=clock.stop(),
            )
            results["rows"].append(row)
            _write(out, name, results, names)
            print(f"{contender}: diverged at lr {error.learning_rate}", flush=True)
            continue
        row["prune_seconds"] = clock.stop()  # every process's, where the row was killed and resumed
        if resumed:
            row["resumed"] = True
        if data == SELF_GENERATED:  # the sampling is paid once per run, but every contender that trains on it needs it
            row["generation_seconds"] = self_generated_seconds
        row["removed"] = result.plan.removed_blocks
        row["stages"] = [{"method": s["method"], "seconds": s.get("seconds")} for s in result.plan.stages]
        row["trainable_parameters"] = _trainable(result.plan)
        row["passes"] = _passes(result.plan)
        row["tokens_trained"] = _tokens_trained(result.plan)
        row["params"] = parameter_count(result.model)
        row.update(evaluate_standard(result.model, tokenizer, settings))
        if args.table in FOOTPRINT_TABLES:
            row["footprint"] = footprint(result.model, tokenizer, dense)
        results["rows"].append(row)
        _write(out, name, results, names)
        structure = f"{row['footprint']['blocks']} blocks" if "footprint" in row else f"removed {row['removed']}"
        print(f"{contender}: {structure}, ppl {row['wikitext']['perplexity']:.2f}, {row['prune_seconds']:.0f} s", flush=True)
        del result
    _write(out, name, results, names)


def _write(out: Path, name: str, results: dict, names: list[str]) -> None:
    """The JSON and the table after every finished row, so each row can be committed as it lands."""
    results["rows"] = in_asked_order(results["rows"], names)
    write_json(out, name, results)
    write_table(out, name, markdown(results))


def footprint(model, tokenizer, dense=None, rounds: int = 3) -> dict:
    """Bytes on disk as prunekit saves the model (shared blocks: each shared tensor once) and greedy decode
    speed (128-token prompt, 64 new tokens, batch 1), best of `rounds`.

    With `dense`, the dense model is timed in turn with this one (dense, model, dense, ...), and the ratio of
    the two bests is reported too: on a machine that other work shares, the ratio holds where the absolute
    speed does not.
    """
    with tempfile.TemporaryDirectory(prefix="equal-budget-footprint-") as scratch:
        disk = disk_size(save_model(model, tokenizer, Path(scratch) / "model"))
    timed = {"model": [], "dense": []}
    for _ in range(rounds):
        for which, subject in (("dense", dense), ("model", model)):
            if subject is not None:
                timed[which].append(measure_speed(subject, prompt_tokens=128, new_tokens=64, repeats=1).decode_tokens_per_second)
    out = {"blocks": model.config.num_hidden_layers, "disk_bytes": disk, "decode_tokens_per_second": max(timed["model"])}
    if dense is not None:
        out["decode_vs_dense"] = out["decode_tokens_per_second"] / max(timed["dense"])
    return out


def _footprint_cells(size: dict | None) -> list[str]:
    """Disk MB and decode tok/s (with the ratio to the dense model timed in turn, where there is one)."""
    if not size:
        return ["-", "-"]
    ratio = f" ({size['decode_vs_dense']:.2f}x)" if "decode_vs_dense" in size else ""
    return [f"{size['disk_bytes'] / 1e6:.1f}", f"{size['decode_tokens_per_second']:.1f}{ratio}"]


def in_asked_order(rows: list[dict], names: list[str]) -> list[dict]:
    """Rows in the order the contenders were named (others after them, as they were), so that a rerun
    naming another contender first re-renders the table against that one."""
    return sorted(rows, key=lambda row: names.index(row["contender"]) if row["contender"] in names else len(names))


def _where(results: dict) -> str:
    device = results["evaluation"].get("device", "cpu")
    return "CPU (2 cores)" if device == "cpu" else device


def _commits(results: dict) -> str:
    """The commit of the run, or of each row where a resumed run finished rows at later commits."""
    commits = [row.get("commit", results["commit"]) for row in results["rows"]]
    if all(commit == results["commit"] for commit in commits):
        return results["commit"]
    return "per row: " + ", ".join(f"{row['contender']} {commit}" for row, commit in zip(results["rows"], commits))


def _quoted(argument: str) -> str:
    return f"'{argument}'" if " " in argument else argument


def _recorded(earlier: dict, key: str, current):
    """A setting of an earlier run; a recovery setting added since it was recorded (sharding, say) reads as
    its default, which the run had, as the trainer reads an older run file."""
    value = earlier.get(key, UNRECORDED.get(key))
    if key == "recovery" and isinstance(value, dict) and isinstance(current, dict):
        defaults = RecoveryConfig().to_dict()
        value = {**{k: defaults[k] for k in current if k in defaults}, **value}
    return value


def _differing(earlier: dict, header: dict, keys) -> list[str]:
    """The settings among `keys` in which an earlier run's record differs from this run's header."""
    current = {k: json.loads(json.dumps(header.get(k, UNRECORDED.get(k)))) for k in keys}  # tuples read back as lists
    return [k for k in keys if _recorded(earlier, k, current[k]) != current[k]]


def _resumed(path: Path, header: dict) -> dict:
    """The finished rows of an earlier run with the same settings; a fresh record where there is none.

    A file from a run with other settings is refused, not overwritten: its rows cost hours.
    """
    if path.exists():
        earlier = json.loads(path.read_text())
        differ = _differing(earlier, header, SETTINGS)
        if differ:
            refuse(
                f"{path} holds a run with other settings ({', '.join(differ)}); pass another --name to keep both, "
                "or move that file away to start afresh"
            )
        earlier["command"] = header["command"]
        return earlier
    commit = git_commit()
    return {**header, "commit": commit, "rows": []}


DENSE_SETTINGS = ("table", "model", "evaluation")  # what the untrained dense model's row depends on


def _dense_from(path: Path, header: dict) -> dict:
    """The untrained dense row of another run of the same model, table and evaluation: it does not depend on
    the budget, the recovery or its data, and evaluating it again costs a quarter of an hour."""
    if not path.exists():
        refuse(f"--dense-from: {path} does not exist; name a finished table in --out, or leave the option out")
    earlier = json.loads(path.read_text())
    differ = _differing(earlier, header, DENSE_SETTINGS)
    if differ or "dense" not in earlier:
        why = f"other settings ({', '.join(differ)})" if differ else "no dense row"
        refuse(f"--dense-from: {path} holds {why}; leave the option out to evaluate the dense model")
    return {**earlier["dense"], "copied_from": f"{path.stem} (commit {earlier.get('commit', 'unknown')})"}


def _trainable(plan) -> int | None:
    for stage in plan.stages:
        details = stage.get("details") or {}
        steps = details.get("steps") if isinstance(details.get("steps"), list) else []  # IteRABRe: each iteration's recovery
        for record in [details, details.get("recovery") or {}] + [step.get("recovery") or {} for step in reversed(steps)]:
            if "trainable_parameters" in record:
                return record["trainable_parameters"]
    return None


def _recoveries(plan):
    """The record of every recovery the row ran: a stage's own, or each IteRABRe iteration's and final pass's."""
    for stage in plan.stages:
        details = stage.get("details") or {}
        steps = details.get("steps") if isinstance(details.get("steps"), list) else []
        for record in [details, details.get("recovery") or {}] + [step.get("recovery") or {} for step in steps]:
            if "epochs" in record:
                yield record


def _passes(plan) -> list[float | None]:
    """How often each of the row's recoveries saw its data (None: less than one pass of a stream)."""
    return [record["epochs"] for record in _recoveries(plan)]


def _tokens_trained(plan) -> int:
    return sum(record["tokens"] for record in _recoveries(plan))


def tokens_per_pass(spec: str, tokenizer, seq_len: int = 512) -> int:
    """The tokens one pass over streamed data gives as training windows (the stream is read to its end once)."""
    stream = streamed_windows(spec, tokenizer, seq_len=seq_len)
    stream_log = logging.getLogger("prunekit.recovery.window_stream")
    level = stream_log.level
    stream_log.setLevel(logging.ERROR)  # its "ends before the budget does" is the very end asked for here
    try:
        while stream.passes() is None:
            stream.take(256)
    finally:
        stream_log.setLevel(level)
    return round(stream.position / stream.passes() * seq_len)


def _passes_text(rows: list[dict], budget: int | None = None, data_tokens: int | None = None) -> str:
    """How often each contender's training saw its data (a pass is the whole data once). With the data's size known
    (the C4 training files), each row's tokens over it: windows drawn into memory first (IteRABRe) count as read; else
    the trainer's count, which for those sees only the windows drawn."""
    seen = []
    for row in rows:
        passes = [p for p in row.get("passes") or [] if p is not None]
        if data_tokens and row.get("passes"):
            seen.append(f"{row['contender']} {row.get('tokens_trained', budget) / data_tokens:.2f}")
        elif passes:
            seen.append(f"{row['contender']} {max(passes):.2f}")
        elif row.get("passes"):  # a stream that never came round: less than one pass
            seen.append(f"{row['contender']} under 1")
    size = f" ({data_tokens:,} tokens)" if data_tokens else ""
    return (f"; passes over the training data{size}: " + ", ".join(seen)) if seen else ""


def markdown(results: dict) -> str:
    dense = results["dense"]
    rows = [r for r in results["rows"] if not r.get("diverged")]
    reference = rows[0] if rows else None
    tasks = list(dense["tasks"])
    c4 = bool(dense.get("c4"))
    sized = "footprint" in dense  # size on disk and decode speed
    grown = results["table"] == "extend"
    change = "grown from 30 blocks, or trained as it is" if grown else f"{results['remove']} of 30 blocks removed"
    loss = "next-token loss" if grown else "KL distillation"
    lines = [
        f"`{results['model']}` fp32 on {_where(results)}, {change}; {results['budget']:,} training "
        f"tokens per contender, of C4 unless the contender says self-generated or wikitext ({loss}, same windows in the same "
        f"order, {results['recovery']['precision']} autocast, default lr {results['recovery']['learning_rate']}); "
        f"WikiText-2 test {results['evaluation']['wikitext_windows']}x512"
        + (f"; tasks: first {results['evaluation']['items_per_task']} items each" if tasks else "")
        + (f"; C4 validation (the papers' 1,000 documents, never trained on) {results['evaluation'].get('c4_windows')}x512" if c4 else "")
        + _passes_text(results["rows"], results["budget"], results.get("data_tokens"))
        + (
            "; disk: safetensors as prunekit saves the model (fp32); decode: greedy, 128-token prompt, 64 new tokens, batch 1, "
            "best of 3 rounds in which the dense model is timed in turn (the machine may be shared: the ratio is the robust number)"
            if sized
            else ""
        )
        + (f"; the dense row is taken from {dense['copied_from']}, evaluated the same way" if dense.get("copied_from") else "")
        + f". Commit {_commits(results)}; command: `{results['command']}`.",
        "Verdicts against the first row, paired over the same windows / items, 'better'/'worse' only beyond two standard errors.",
        "",
        f"| contender | {'blocks' if grown else 'removed'} | trainable (M) | WikiText-2 ppl | vs reference (NLL per token) | "
        + ("C4 ppl | C4 vs reference | " if c4 else "")
        + ("task mean ± se | vs reference | " if tasks else "")
        + "FLORES / dense (mean / worst) | FLORES vs reference (NLL per token) | "
        + ("disk (MB) | decode tok/s (vs dense, timed in turn) | " if sized else "")
        + "wall time (s): prune + train, eval |",
        "|---|---|---:|---:|---|"
        + ("---:|---|" if c4 else "")
        + ("---:|---|" if tasks else "")
        + "---|---|"
        + ("---:|---:|" if sized else "")
        + "---:|",
    ]
    for row in [{"contender": "dense", **dense}] + results["rows"]:
        if row.get("diverged"):
            lines.append(
                f"| {row['contender']} | diverged at lr {row['learning_rate']} (step {row['step']}) | | | | | "
                + ("| | " if c4 else "")
                + ("| | " if tasks else "")
                + ("| | " if sized else "")
                + f"| {row['prune_seconds']:.0f} |"
            )
            continue
        trainable = row.get("trainable_parameters")
        structure = row.get("footprint", {}).get("blocks", "-") if grown else row.get("removed", "-")
        cells = [row["contender"], str(structure), f"{trainable / 1e6:.2f}" if trainable else "-"]
        cells.append(f"{row['wikitext']['perplexity']:.2f}")
        versus = compare_results(reference, row) if reference is not None and row is not reference and row["contender"] != "dense" else None
        cells.append(verdict_text(versus["wikitext"]) if versus else "-")
        if c4:
            cells.append(f"{row['c4']['perplexity']:.2f}" if row.get("c4") else "-")
            cells.append(verdict_text(versus["c4"]) if versus and "c4" in versus else "-")
        if tasks:
            mean, se = task_mean(row)
            cells.append(f"{mean:.3f} ± {se:.3f}")
            cells.append(verdict_text(versus["task_mean"]) if versus else "-")
        if row["contender"] == "dense":
            cells.append("1.00 / 1.00")
        else:
            ratios = compare_results(dense, row).get("flores")
            cells.append(f"{ratios['mean_ratio']:.2f} / {ratios['worst_ratio']:.2f} ({ratios['worst_language']})" if ratios else "-")
        cells.append(flores_versus(reference, row) if versus else "-")
        if sized:
            cells += _footprint_cells(row.get("footprint"))
        wall = f"{row['prune_seconds']:.0f} + {sum(row['seconds'].values()):.0f}" if "prune_seconds" in row else "-"
        if "generation_seconds" in row:
            wall += f" (+ {row['generation_seconds']:.0f} sampling the data, once per run)"
        cells.append(wall)
        lines.append("| " + " | ".join(cells) + " |")
    if tasks:
        lines += _without_boolq(reference, rows)
    return "\n".join(lines)


def _without_boolq(reference: dict | None, rows: list[dict]) -> list[str]:
    """The task-mean verdicts again without BoolQ, which on models this small follows their yes/no balance more than
    their reading (a recovery that tips the balance moves it by 0.1-0.2 alone)."""
    others = [row for row in rows if row is not reference]
    if reference is None or not others or "boolq" not in reference["tasks"]:
        return []
    parts = []
    for row in others:
        rest = {name: t for name, t in compare_results(reference, row)["tasks"].items() if name != "boolq"}
        parts.append(f"{row['contender']} {verdict_text(mean_difference(rest))}")
    return ["", "Task mean without BoolQ (it follows a small model's yes/no balance), against the first row: " + "; ".join(parts) + "."]


if __name__ == "__main__":
    main()
