"""What a fit shows its user: the contenders' table, the verdict with its paired evidence, and the Pareto plot."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prunekit.plots import plot_pareto

REPORT_MD = "fit_report.md"
REPORT_PNG = "fit_pareto.png"


def _row(c: dict, chosen: str) -> str:
    predicted = "" if c.get("predicted_bytes") is None else f"{c['predicted_bytes'] / 2**20:.2f}"
    speed = "" if c.get("predicted_speedup") is None else f"{c['predicted_speedup']:.2f}"
    mark = " **chosen**" if c["name"] == chosen else ""
    return (
        f"| {c['name']}{mark} | {c['gguf_type']} | {c['bytes'] / 2**20:.2f} | {predicted} | {c['params'] / 1e6:.1f} | "
        f"{c['tokens_per_s']:.1f} | {c['speedup']:.2f} | {speed} | {c['perplexity']:.2f} | {'yes' if c['meets'] else 'no'} | "
        f"{c['seconds']:.0f} |"
    )


def markdown(report: dict, title: str = "prunekit fit") -> str:
    chosen = report["chosen"]
    lines = [
        f"# {title}",
        "",
        f"FitTargets: {report['targets_text']}. Chosen: **{chosen}**.",
        "",
        "| contender | type | MiB | predicted MiB | params (M) | decode tok/s | speed-up | predicted | held-out ppl | meets | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    lines += [_row(c, chosen) for c in report["contenders"]]
    lines += [
        "",
        "Paired comparison of the chosen file against the best of each other kind that meets the targets "
        "(mean NLL per held-out window, chosen minus rival; 'better' only beyond two standard errors):",
        "",
    ]
    for rival, result in report["comparisons"].items():
        lines.append(f"- {rival}: {result['difference']:+.4f} ± {result['standard_error']:.4f} nats -> {result['verdict']}")
    if not report["comparisons"]:
        lines.append("- no other contender meets the targets")
    lines += ["", *[f"- {note}" for note in report["notes"]], "", f"Timings (s): {report['timings']}"]
    return "\n".join(lines) + "\n"


def _atomic_text(path: Path, text: str) -> None:
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(staged, path)


def pareto_points(report: dict) -> list[dict]:
    return [
        {
            "name": c["name"],
            "kind": c["kind"],
            "mib": c["bytes"] / 2**20,
            "speedup": c["speedup"],
            "perplexity": c["perplexity"],
            "chosen": c["name"] == report["chosen"],
        }
        for c in report["contenders"]
    ]


def write_report_files(result, out: str | os.PathLike | None) -> list[Path]:
    """fit_report.md and fit_pareto.png in `out` (beside the checkpoint and fit_report.json)."""
    if out is None:
        return []
    out = Path(out)
    md = out / REPORT_MD
    _atomic_text(md, markdown(result.report))
    png = out / REPORT_PNG
    staged = out / f".{REPORT_PNG}.partial.png"
    plot_pareto(
        staged,
        pareto_points(result.report),
        title=f"prunekit fit: {result.report['targets_text']}",
        max_bytes=result.report["targets"]["max_bytes"],
    )
    os.replace(staged, png)
    return [md, png]


def report_lines(result) -> list[str]:
    report = result.report
    lines = [f"fit: {report['targets_text']}"]
    for c in report["contenders"]:
        lines.append(
            f"  {c['name']:<28} {c['gguf_type']:<7} {c['bytes'] / 2**20:7.2f} MiB  {c['params'] / 1e6:6.1f}M  "
            f"{c['speedup']:.2f}x  ppl {c['perplexity']:8.2f}  {'meets' if c['meets'] else '-'}"
        )
    lines.append(f"chosen: {report['chosen']}")
    lines += [f"note: {note}" for note in report["notes"]]
    for rival, r in report["comparisons"].items():
        lines.append(f"against {rival}: {r['difference']:+.4f} ± {r['standard_error']:.4f} nats per token ({r['verdict']})")
    return lines
