"""prunekit at the scale people prune: randomly initialised models of real shapes, through the Python API.

The weights are random, so only time, memory and code paths count (no quality). For every shape:
a plain forward over the calibration windows; the block scans; ShortGPT at 25%; LIAR at 20% and 50%
of the block parameters (FFN channels, wanda, damping auto: the defaults), and at 20% with the kept
channels rounded to a multiple of 64 (`liar-20-m64`, the GPU-friendly width); FlexiGPT's replacement of
25% of the blocks; one IteRABRe iteration with a 64k-token recovery (blocks scope); the recovery
trainer as it was (fixed micro-batch 1 x 512) against today's (regrouped micro-batches at seq 2048);
dense vs pruned forward tokens/s. Each in-place method gets a freshly built model, so its peak
memory is its own; `weights` is the model's weight memory and `peak / weights` the ratio.

    python benchmarks/scale.py --shapes tiny --out /tmp/scale        # CPU smoke run (tested)
    python benchmarks/scale.py --shapes llama-3.1-8b,llama-3.2-1b,llama-3.1-70b-4,qwen2.5-7b --budget-s 330

Rows run in priority order (the targets first) until `--budget-s` is spent; every row is written
to `<out>/scale.json` as it finishes, and the Markdown table `<out>/scale.md` at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

# Real model shapes (config fields). "-4" = the first 4 of 80 blocks: one block's cost and peak
# memory are those of the whole model's blocks, and 70B weights do not fit beside the host's memory.
SHAPES = {
    "tiny": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        windows=8,
        seq_len=64,
        recovery_seq_len=64,
    ),
    "llama-3.2-1b": dict(
        model_type="llama",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    "llama-3.1-8b": dict(
        model_type="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
    ),
    "qwen2.5-7b": dict(
        model_type="qwen2",
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        rope_theta=1000000.0,
    ),
    "llama-3.1-70b-4": dict(
        model_type="llama",
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=4,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        offload=True,
    ),
}
DEFAULTS = dict(windows=32, seq_len=2048, recovery_seq_len=2048)
# (priority, shape, row): lower runs first; the targets of issue 13 come first.
PLAN = [
    (0, "llama-3.1-8b", "forward"),
    (0, "llama-3.1-8b", "liar-20"),
    (0, "llama-3.2-1b", "recovery-before"),
    (0, "llama-3.2-1b", "recovery"),
    (0, "llama-3.2-1b", "recovery-fsdp"),
    (1, "llama-3.1-8b", "liar-20-m64"),
    (1, "llama-3.1-8b", "liar-50"),
    (1, "llama-3.1-8b", "bi"),
    (1, "llama-3.1-8b", "shortgpt-25"),
    (1, "llama-3.1-70b-4", "liar-20"),
    (1, "qwen2.5-7b", "forward"),
    (1, "qwen2.5-7b", "liar-20"),
    (1, "qwen2.5-7b", "liar-20-m64"),
    (2, "llama-3.2-1b", "forward"),
    (2, "llama-3.2-1b", "bi"),
    (2, "llama-3.2-1b", "angular"),
    (2, "llama-3.2-1b", "shortgpt-25"),
    (2, "llama-3.2-1b", "liar-20"),
    (2, "llama-3.2-1b", "liar-50"),
    (2, "llama-3.2-1b", "iterabre-1"),
    (2, "llama-3.2-1b", "flexigpt-25"),
    (2, "llama-3.1-8b", "angular"),
    (2, "llama-3.1-8b", "iterabre-1"),
    (3, "llama-3.2-1b", "taylor"),
    (3, "llama-3.2-1b", "removal-cosine"),
    (3, "llama-3.2-1b", "removal-loss"),
    (3, "llama-3.1-8b", "taylor"),
    (3, "qwen2.5-7b", "shortgpt-25"),
    (3, "llama-3.1-8b", "removal-cosine"),
    (3, "llama-3.1-8b", "flexigpt-25"),
]
# A tiny run exercises every row on the CPU.
TINY_ROWS = [
    "forward",
    "bi",
    "angular",
    "removal-cosine",
    "removal-loss",
    "taylor",
    "shortgpt-25",
    "liar-20",
    "liar-20-m64",
    "liar-50",
    "flexigpt-25",
    "iterabre-1",
    "recovery-before",
    "recovery",
    "recovery-fsdp",
]


def shape_settings(name: str) -> dict:
    settings = {**DEFAULTS, **SHAPES[name]}
    config_fields = {k: v for k, v in settings.items() if k not in ("windows", "seq_len", "recovery_seq_len", "offload")}
    return {
        "config": config_fields,
        "windows": settings["windows"],
        "seq_len": settings["seq_len"],
        "recovery_seq_len": settings["recovery_seq_len"],
        "offload": settings.get("offload", False),
    }


def build(name: str, device: torch.device, seed: int = 0):
    """A randomly initialised model of the shape, in bf16 on CUDA (fp32 on the CPU)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(shape_settings(name)["config"])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def random_windows(model, count: int, seq_len: int, seed: int = 0):
    from prunekit import TokenWindows

    ids = torch.randint(3, model.config.vocab_size, (count, seq_len), generator=torch.Generator().manual_seed(seed))
    return TokenWindows(ids, f"random tokens {count}x{seq_len}", ids.numel())


class Meter:
    """Wall time (synchronised) and the device's peak memory over a block of work."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            from prunekit.evaluation.speed import peak_rss_bytes

            self.peak = peak_rss_bytes()
        self.seconds = time.perf_counter() - self.started
        return False


@torch.no_grad()
def timed_forwards(model, windows, device: torch.device) -> Meter:
    """Plain forwards over the windows, one at a time, after one warm-up window: time and peak of the pass."""
    model(input_ids=windows.input_ids[:1].to(device), use_cache=False)
    meter = Meter(device)
    with meter:
        for row in windows.input_ids:
            model(input_ids=row[None].to(device), use_cache=False)
    return meter


def forward_tokens_per_second(model, windows, device: torch.device) -> float:
    return windows.num_tokens / timed_forwards(model, windows, device).seconds


def run_row(shape: str, row: str, device: torch.device, state: dict) -> dict:
    """One measurement; `state` keeps the dense model of the shape between rows (rebuilt when a row changed it)."""
    import prunekit
    from prunekit.evaluation.speed import weight_bytes

    settings = shape_settings(shape)
    offload = settings["offload"]

    def fresh():
        if state.get("shape") != shape or state.get("dirty"):
            state.clear()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            state.update(shape=shape, model=build(shape, device), dirty=False)
        return state["model"]

    model = fresh()
    windows = random_windows(model, settings["windows"], settings["seq_len"])
    out = {
        "shape": shape,
        "row": row,
        "weights_gib": weight_bytes(model) / 2**30,
        "tokens": windows.num_tokens,
        "parameters_b": prunekit.parameter_count(model) / 1e9,
        "block_gib": weight_bytes(prunekit.ModelAdapter(model).layers[0]) / 2**30,
        "offload": offload,
    }
    engine = {"device": device, "offload": offload, "progress": False}
    meter = Meter(device)
    if row == "forward":
        meter = timed_forwards(model, windows, device)
        out["tokens_per_second"] = windows.num_tokens / meter.seconds
    elif row in ("bi", "angular", "removal-cosine", "removal-loss", "taylor"):
        with meter:
            scores = prunekit.scan_blocks(model, windows, row, **engine)
        out["ranking"] = scores.ranking()[:5]
    elif row == "shortgpt-25":
        with meter:
            pruned, plan = prunekit.prune(model, "shortgpt", windows, ratio=0.25, **engine)
        out["removed"] = plan.removed_blocks
        out["dense_tokens_per_second"] = forward_tokens_per_second(model, windows, device)
        out["pruned_tokens_per_second"] = forward_tokens_per_second(pruned, windows, device)
        del pruned
    elif row.startswith("liar-"):
        ratio = int(row.split("-")[1]) / 100
        multiple = int(row.split("-m")[1]) if "-m" in row else 1  # liar-20-m64: kept channels rounded to 64
        state["dirty"] = True
        with meter:
            result = prunekit.prune(model, "liar", windows, ratio=ratio, channel_multiple=multiple, inplace=True, **engine)
        plan = result.plan.stages[0]["details"]
        out.update(
            ffn_channels_removed=plan["ffn_channels_removed"],
            ffn_outputs=plan["ffn_outputs"],
            intermediate_size=plan["intermediate_size_after"],
            dampings=sorted({layer["damping"] for layer in plan["layers"]}),
            plan_seconds=plan["seconds"],
            plan_peak_cuda_mib=plan.get("peak_cuda_mib"),
        )
        if not offload:
            out["pruned_tokens_per_second"] = forward_tokens_per_second(model, windows, device)
    elif row == "flexigpt-25":
        state["dirty"] = True
        with meter:  # the BI scan and the replacement, no adapter training
            result = prunekit.prune(model, prunekit.FlexiGPTConfig(ratio=0.25, recovery=None), windows, inplace=True, **engine)
        record = result.plan.stages[0]["details"]
        out.update(
            replaced=record["replaced_blocks"],
            rank=record["rank"],
            shared_tokens_per_second=forward_tokens_per_second(model, windows, device),
        )
    elif row in ("iterabre-1", "recovery", "recovery-before", "recovery-fsdp"):
        out.update(recovery_row(shape, row, model, device, settings, state))
    else:
        raise ValueError(row)
    out["seconds"] = meter.seconds if hasattr(meter, "seconds") else out.get("seconds")
    out["peak_gib"] = meter.peak / 2**30 if hasattr(meter, "peak") else out.get("peak_gib")
    if out.get("peak_gib") is not None and device.type == "cuda":
        out["peak_over_weights"] = out["peak_gib"] / out["weights_gib"]
    return out


@contextlib.contextmanager
def one_process_group(device: torch.device):
    """A process group of this process alone, removed afterwards (with the environment it needed)."""
    saved = dict(os.environ)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29517"), RANK="0", WORLD_SIZE="1")
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)


def recovery_row(shape: str, row: str, model, device: torch.device, settings: dict, state: dict) -> dict:
    """64k tokens of distillation from a dense copy: one IteRABRe iteration, or the trainer alone."""

    import prunekit
    from prunekit import IterabreConfig, RecoveryConfig, recover

    state["dirty"] = True
    long = settings["recovery_seq_len"]
    tokens = 64 * 1024 if shape != "tiny" else 16 * long
    # Before: one 512-token window per forward, as the trainer ran on the H200 in issue 13. Now: the
    # same tokens per optimizer step in windows of `long`, regrouped to fill the GPU.
    seq = min(512, long) if row == "recovery-before" else long
    per_step = 4 * long // seq
    config = RecoveryConfig(
        tokens=tokens, seq_len=seq, micro_batch_size=1, grad_accumulation=per_step, fit_micro_batch=row != "recovery-before", scope="blocks"
    )
    if row == "recovery-fsdp":  # FSDP2 in one process: what sharding costs where there is nothing to split
        config = replace(config, sharding="fsdp")
    data = random_windows(model, max(1, tokens // seq), seq, seed=1)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    meter = Meter(device)
    out = {"recovery_tokens": tokens, "recovery_seq_len": seq}
    if row == "iterabre-1":
        calibration = random_windows(model, settings["windows"], settings["seq_len"])
        with meter:
            result = prunekit.prune(
                model,
                # the paper's loop, as in the earlier GPU runs: removal-cosine scan, then this iteration's recovery
                IterabreConfig(remove=1, recovery=config, metric="removal-cosine", final_share=0.0),
                calibration,
                teacher=teacher,
                recovery_data=data,
                inplace=True,
                device=device,
                progress=False,
            )
        step = result.plan.stages[0]["details"]["steps"][0]
        out.update(
            removed=step["removed"],
            scan_seconds=step["scan_seconds"],
            **{f"recovery_{k}": v for k, v in step["recovery"].items() if k in ("seconds", "tokens_per_second", "mfu", "micro_batch_size")},
        )
    else:
        prunekit.remove_blocks(model, [len(prunekit.ModelAdapter(model).layers) // 2])  # a pruned student, as in real use
        with meter, one_process_group(device) if row == "recovery-fsdp" else contextlib.nullcontext():
            result = recover(model, data, config, teacher=teacher, device=device, progress=False)
        out.update(
            tokens_per_second=result.tokens_per_second,
            mfu=result.mfu,
            micro_batch_size=result.micro_batch_size,
            grad_accumulation=result.grad_accumulation,
            gradient_checkpointing=result.gradient_checkpointing,
            loss_first=result.loss_first,
            loss_last=result.loss_last,
            memory_estimate_gib=result.memory["estimate"]["total"] / 2**30,
            memory_measured_gib=result.memory["measured_peak_bytes"] / 2**30,
            memory_measured_kind=result.memory["measured_kind"],
        )
    out["seconds"], out["peak_gib"] = meter.seconds, meter.peak / 2**30
    del teacher
    return out


def table(results: dict) -> str:
    lines = [
        f"Commit `{results['commit']}`, {results['device']}, torch {results['torch']}, transformers {results['transformers']}; "
        f"command: `{results['command']}`. Calibration: {results['calibration']}. Random weights: time and memory only.",
        "",
        "| shape | row | seconds | peak GiB | peak / weights | tokens/s | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['row']} | - | - | - | - | failed: {r['error'][:80]} |")
            continue
        speed = r.get("tokens_per_second")
        notes = []
        if "pruned_tokens_per_second" in r:
            notes.append(
                f"pruned {r['pruned_tokens_per_second']:.0f} tok/s"
                + (f" vs dense {r['dense_tokens_per_second']:.0f}" if "dense_tokens_per_second" in r else "")
            )
        for key in (
            "ffn_outputs",
            "dampings",
            "micro_batch_size",
            "mfu",
            "recovery_tokens_per_second",
            "recovery_mfu",
            "removed",
            "replaced",
        ):
            if r.get(key) is not None:
                value = r[key]
                notes.append(
                    f"{key} {value:.1%}" if key.endswith("mfu") else f"{key} {value:.0f}" if isinstance(value, float) else f"{key} {value}"
                )
        ratio = f"{r['peak_over_weights']:.2f}" if r.get("peak_over_weights") else "-"
        lines.append(
            f"| {r['shape']} | {r['row']} | {r['seconds']:.1f} | {r['peak_gib']:.1f} | {ratio} | "
            f"{f'{speed:.0f}' if speed else '-'} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny", help=f"comma-separated, of: {', '.join(SHAPES)}")
    parser.add_argument("--rows", help="comma-separated rows to run (default: all planned for the shapes)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget-s", type=float, default=330.0, help="stop starting rows after this many seconds")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="scale")
    args = parser.parse_args(argv)
    from prunekit.models.loading import resolve_device

    device = resolve_device(args.device)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {', '.join(SHAPES)}")
    if "tiny" in shapes:
        plan = [(0, "tiny", row) for row in TINY_ROWS]
    else:
        plan = sorted((p for p in PLAN if p[1] in shapes), key=lambda p: (p[0], shapes.index(p[1])))
    if args.rows:
        plan = [p for p in plan if p[2] in args.rows.split(",")]
    commit = os.environ.get("BENCH_COMMIT", "")  # a copy of the tree whose .git is not this commit's (a GPU machine)
    try:
        commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    except OSError:
        pass
    import transformers

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "commit": commit or "unknown",
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "calibration": "random tokens, 32 x 2048 per shape (tiny: 8 x 64)",
        "rows": [],
    }
    started = time.perf_counter()
    state: dict = {}
    # Rows run grouped by shape within a priority (one model build serves consecutive rows).
    for priority, shape, row in plan:
        if time.perf_counter() - started > args.budget_s:
            results["rows"].append({"shape": shape, "row": row, "error": "skipped: time budget spent"})
            continue
        try:
            entry = run_row(shape, row, device, state)
        except Exception as error:  # a benchmark row that fails is reported, and the run goes on
            entry = {
                "shape": shape,
                "row": row,
                "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}",
            }
            state.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results["rows"].append(entry)
        print(json.dumps(entry), flush=True)
        (out_dir / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    results["total_seconds"] = time.perf_counter() - started
    (out_dir / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out_dir / f"{args.name}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
