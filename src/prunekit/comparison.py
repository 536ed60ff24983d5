"""Before/after evaluation of a pruning run: the dense model first, the pruned one after, one report."""

from __future__ import annotations

from pathlib import Path

from prunekit.errors import ParameterError
from prunekit.evaluation.suite import EvaluationRequest, evaluate_model
from prunekit.evaluation.tasks import check_task_names
from prunekit.methods import stage_label
from prunekit.reporting import write_report


def check_seq_len(seq_len: int, model, parameter: str = "seq_len") -> None:
    if seq_len is not None and seq_len < 1:
        raise ParameterError(parameter, f"{seq_len} must be at least 1")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and seq_len > limit:
        raise ParameterError(parameter, f"{seq_len} exceeds the model's context of {limit} tokens; use a shorter window")


def check_limit(limit: float | None, parameter: str = "limit") -> None:
    if limit is not None and not limit > 0:
        raise ParameterError(parameter, f"{limit:g} must be positive: items per task, or a fraction of each task below 1")


def comparison_request(
    ppl: str, seq_len: int, windows: int, tasks: list[str], data_dir: str | None, limit: float | None, offload: bool = False
) -> EvaluationRequest:
    """What a before/after comparison measures (checked before anything is loaded)."""
    check_limit(limit, "eval_limit")
    if tasks:
        check_task_names(tasks, local=data_dir is not None)
    return EvaluationRequest(
        ppl=[ppl], seq_len=seq_len, ppl_windows=windows, tasks=tasks, data_dir=data_dir, limit=limit, offload=offload, speed=True
    )


def pruned_label(plan) -> str:
    """A short name for a pruned model in reports: its stages' labels joined."""
    return " + ".join(stage_label(stage) for stage in plan.stages)


def evaluate_pruned(loaded, request: EvaluationRequest, plan, *, device, progress: bool = True) -> dict:
    results = evaluate_model(loaded, request, device=device, progress=progress, label=pruned_label(plan))
    results["plan"] = plan.to_dict()
    return results


def write_comparison_report(out: Path, dense: dict, pruned: dict) -> Path:
    write_report([dense, pruned], out / "report", baseline="dense")
    return out / "report" / "report.md"


def comparison_table(dense: dict, pruned: dict) -> list[list[str]]:
    """Rows of a before/after table: blocks, parameters, perplexity, forward tokens/s and task accuracies."""

    def row(name, a, b, fmt="{:.2f}"):
        return [name, fmt.format(a), fmt.format(b), f"{b / a:.2f}" if a else "-"]

    rows = [
        ["", "dense", "pruned", "pruned/dense"],
        row("blocks", dense["blocks"], pruned["blocks"], "{}"),
        row("parameters (M)", dense["parameters"] / 1e6, pruned["parameters"] / 1e6, "{:.1f}"),
    ]
    for spec, result in dense.get("perplexity", {}).items():
        other = pruned["perplexity"][spec]
        rows.append(row(f"perplexity {spec} ({result['windows']}x{result['seq_len']})", result["perplexity"], other["perplexity"]))
        rows.append(row("forward tokens/s", result["tokens_per_second"], other["tokens_per_second"], "{:.0f}"))
    if "speed" in dense and "speed" in pruned:
        a, b = dense["speed"], pruned["speed"]
        rows.append(
            row(f"prefill tokens/s ({a['prompt_tokens']} tokens)", a["prefill_tokens_per_second"], b["prefill_tokens_per_second"], "{:.0f}")
        )
        rows.append(row("decode tokens/s", a["decode_tokens_per_second"], b["decode_tokens_per_second"], "{:.1f}"))
        rows.append(row("weights in memory (MiB)", a["weight_bytes"] / 2**20, b["weight_bytes"] / 2**20, "{:.0f}"))
    for task, values in dense.get("tasks", {}).items():
        metric = "acc_norm" if "acc_norm" in values else "acc"
        rows.append(row(f"{task} {metric}", values[metric], pruned["tasks"][task][metric], "{:.4f}"))
    return rows


def format_table(rows: list[list[str]]) -> str:
    """Rows as aligned text columns, the first row a header."""
    widths = [max(len(str(row[c])) for row in rows) for c in range(len(rows[0]))]
    lines = [" | ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(lines[:1] + ["-+-".join("-" * w for w in widths)] + lines[1:])
