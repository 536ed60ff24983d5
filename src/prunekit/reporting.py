"""`prunekit report`: side-by-side tables and plots from `prunekit eval --out` results files.

Ratios are taken against a baseline (the dense model): by default the result with the most blocks.
The report is written as Markdown and HTML (same tables) with PNG plots, atomically.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from prunekit.errors import PrunekitError
from prunekit.jsonfiles import read_json_object, write_json_atomically
from prunekit.models.export import output_dir
from prunekit.plots import plot_block_scores
from prunekit.scoring.blocks import BlockScores

TASK_METRICS = ("acc", "acc_norm")


def check_results(data: dict, path: Path) -> None:
    """The fields the tables read, with the right types: a hand-made or truncated file gets one line."""
    for name in ("blocks", "parameters"):
        if not isinstance(data.get(name), (int, float)) or isinstance(data.get(name), bool):
            raise PrunekitError(f"{path} has no number '{name}'; pass a results file written by prunekit eval --out")
    for name in ("perplexity", "tasks", "multilingual", "speed"):
        if name in data and not isinstance(data[name], dict):
            raise PrunekitError(f"{path}: '{name}' must be an object as prunekit eval writes it")
    for spec, entry in data.get("perplexity", {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("perplexity"), (int, float)):
            raise PrunekitError(f"{path}: perplexity '{spec}' has no number 'perplexity'")


def load_results(items: list[str | dict]) -> list[dict]:
    """Results dicts (from evaluate_model) or the JSON files `prunekit eval --out` wrote."""
    results = []
    for index, path in enumerate(items):
        if isinstance(path, dict):
            data = dict(path)
            data.setdefault("label", data.get("model", f"model {index}"))
            data["_file"] = data["label"]
            results.append(data)
            continue
        p = Path(path).expanduser()
        data = read_json_object(p, "results")
        if "blocks" not in data:
            raise PrunekitError(f"{p} is not a prunekit eval results file (write one with prunekit eval --out)")
        check_results(data, p)
        data.setdefault("label", data.get("model", p.stem))
        data["_file"] = str(p)
        results.append(data)
    labels = [r["label"] for r in results]
    if len(set(labels)) != len(labels):  # make labels unique so table columns are distinguishable
        for r in results:
            r["label"] = f"{r['label']} ({Path(r['_file']).stem})"
    return results


def pick_baseline(results: list[dict], baseline: str | None) -> dict:
    if baseline is None:
        return max(results, key=lambda r: (r["blocks"], r["parameters"]))
    for r in results:
        if baseline in (r["label"], r["_file"], Path(r["_file"]).name, r.get("model")):
            return r
    raise PrunekitError(f"baseline '{baseline}' matches no results file; use one of: {', '.join(r['label'] for r in results)}")


def _fmt(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def build_tables(results: list[dict], base: dict) -> list[tuple[str, list[list[str]]]]:
    """(title, rows) tables; the first row of each is the header."""
    labels = [r["label"] for r in results]
    tables = []
    summary = [["model", "blocks", "parameters", "params / baseline"]]
    for r in results:
        summary.append([r["label"], str(r["blocks"]), f"{r['parameters'] / 1e6:.1f}M", _fmt(r["parameters"] / base["parameters"])])
    tables.append(("Models", summary))

    specs = sorted({spec for r in results for spec in r.get("perplexity", {})})
    if specs:
        rows = [["perplexity data"] + labels]
        for spec in specs:
            rows.append([spec] + [_fmt(r.get("perplexity", {}).get(spec, {}).get("perplexity")) for r in results])
        tables.append(("Perplexity (lower is better)", rows))

    tasks = sorted({t for r in results for t in r.get("tasks", {})})
    if tasks:
        rows = [["task", "metric"] + labels]
        averages: dict[str, list[float]] = {label: [] for label in labels}
        for task in tasks:
            for metric in TASK_METRICS:
                values = [r.get("tasks", {}).get(task, {}).get(metric) for r in results]
                if all(v is None for v in values):
                    continue
                rows.append([task, metric] + [_fmt(v, 4) for v in values])
            # The field's convention: acc_norm where the task reports it, else acc.
            for r in results:
                entry = r.get("tasks", {}).get(task, {})
                value = entry.get("acc_norm", entry.get("acc"))
                if value is not None:
                    averages[r["label"]].append(value)
        rows.append(["average", "acc_norm or acc"] + [_fmt(sum(v) / len(v), 4) if len(v) == len(tasks) else "-" for v in averages.values()])
        limits = {r.get("task_limit") for r in results if r.get("tasks")}
        title = "Zero-shot tasks (higher is better" + (f"; limit {limits.pop()} items per task)" if limits != {None} else ")")
        tables.append((title, rows))

    languages = sorted({lang for r in results for lang in r.get("multilingual", {})})
    if languages:
        rows = [["language"] + [f"{label} ppl" for label in labels] + [f"{label} / baseline" for label in labels if label != base["label"]]]
        for lang in languages:
            ppls = [r.get("multilingual", {}).get(lang, {}).get("perplexity") for r in results]
            base_ppl = base.get("multilingual", {}).get(lang, {}).get("perplexity")
            ratios = [_fmt(p / base_ppl) if p and base_ppl else "-" for r, p in zip(results, ppls) if r is not base]
            rows.append([lang] + [_fmt(p) for p in ppls] + ratios)
        tables.append(("Multilingual perplexity (FLORES-200; ratio to the baseline, 1.00 = nothing lost)", rows))

    if any("speed" in r for r in results):
        rows = [["model", "prefill tok/s", "decode tok/s", "decode / baseline", "weights MiB", "on disk MiB", "peak memory MiB"]]
        base_decode = base.get("speed", {}).get("decode_tokens_per_second")
        for r in results:
            s = r.get("speed")
            if not s:
                continue
            rows.append(
                [
                    r["label"],
                    f"{s['prefill_tokens_per_second']:.0f}",
                    f"{s['decode_tokens_per_second']:.1f}",
                    _fmt(s["decode_tokens_per_second"] / base_decode) if base_decode else "-",
                    f"{s['weight_bytes'] / 2**20:.0f}",
                    f"{s['disk_bytes'] / 2**20:.0f}" if s.get("disk_bytes") else "-",
                    f"{s['peak_memory_bytes'] / 2**20:.0f} ({s['peak_memory_kind']})",
                ]
            )
        tables.append(("Speed and memory", rows))
    return tables


def _grouped_bars(ax, groups: list[str], series: list[tuple[str, list[float]]]) -> None:
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        ax.bar([i + k * width for i in range(len(groups))], values, width, label=label)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(groups))], groups, rotation=20)


def make_plots(results: list[dict], base: dict, folder: Path) -> list[tuple[str, str]]:
    """PNG plots; returns (title, file name) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []

    def save(fig, ax, name: str, title: str) -> None:
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        plots.append((title, name))

    tasks = sorted({t for r in results for t in r.get("tasks", {})})
    if tasks:
        fig, ax = plt.subplots(figsize=(max(6, len(tasks) * 1.4), 3.8))
        series = []
        for r in results:
            entries = [r.get("tasks", {}).get(t, {}) for t in tasks]
            series.append((r["label"], [e.get("acc_norm", e.get("acc", 0.0)) for e in entries]))
        _grouped_bars(ax, tasks, series)
        ax.set_ylabel("accuracy (acc_norm or acc)")
        save(fig, ax, "tasks.png", "Task accuracy per model")

    specs = sorted({spec for r in results for spec in r.get("perplexity", {})})
    if specs and len(results) > 1:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for spec in specs:
            points = sorted(
                (base["blocks"] - r["blocks"], r["perplexity"][spec]["perplexity"]) for r in results if spec in r.get("perplexity", {})
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=spec)
        ax.set_xlabel("blocks removed")
        ax.set_ylabel("perplexity")
        ax.set_yscale("log")
        save(fig, ax, "perplexity.png", "Perplexity vs removed blocks")

    languages = sorted(base.get("multilingual", {}))
    others = [r for r in results if r is not base and r.get("multilingual")]
    if languages and others:
        fig, ax = plt.subplots(figsize=(max(6, len(languages) * 0.9), 3.8))
        _grouped_bars(
            ax,
            languages,
            [
                (
                    r["label"],
                    [
                        r["multilingual"].get(lang, {}).get("perplexity", float("nan")) / base["multilingual"][lang]["perplexity"]
                        for lang in languages
                    ],
                )
                for r in others
            ],
        )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"perplexity / {base['label']}")
        save(fig, ax, "languages.png", "Per-language perplexity ratio to the baseline")

    for r in results:
        for plan in _scored_stages(r.get("plan")):
            scores = BlockScores(
                plan.get("metric") or "score",
                plan["scores"],
                plan.get("data") or {},
                0.0,
                span=len(plan["removed_blocks"]) if plan.get("method") == "angular" else 1,
            )
            name = f"importance-{len(plots)}.png"
            removed = plan["removed_blocks"]
            plot_block_scores(
                scores,
                folder / name,
                title=f"{r['label']}: {plan['method']} removed {removed} (red)",
                highlight=removed if scores.span == 1 else [removed[0]],
            )
            plots.append((f"Block importance behind {r['label']}", name))
    return plots


def _markdown(tables, plots) -> str:
    lines = ["# prunekit report", ""]
    for title, rows in tables:
        lines += [f"## {title}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        lines.append("")
    for title, name in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines)


def _html(tables, plots) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>prunekit report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}</style>",
        "</head><body><h1>prunekit report</h1>",
    ]
    for title, rows in tables:
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]]
        parts.append("</table>")
    for title, name in plots:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{html.escape(name)}' alt='{html.escape(title)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    result_paths: list[str | dict], out: str | Path, *, overwrite: bool = False, baseline: str | None = None
) -> dict[str, Path]:
    results = load_results(result_paths)
    base = pick_baseline(results, baseline)
    out_path = Path(out).expanduser().resolve()
    tables = build_tables(results, base)
    with output_dir(out_path, overwrite=overwrite) as tmp:
        plots = make_plots(results, base, tmp)
        (tmp / "report.md").write_text(_markdown(tables, plots) + "\n")
        (tmp / "report.html").write_text(_html(tables, plots) + "\n")
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return {"markdown": out_path / "report.md", "html": out_path / "report.html", "folder": out_path}


def _scored_stages(plan: dict | None) -> list[dict]:
    """The details of every stage that scored blocks (a format-1 plan is its own single stage)."""
    if not plan:
        return []
    stages = [stage.get("details") or {} for stage in plan["stages"]] if "stages" in plan else [plan]
    return [d for d in stages if d.get("scores") and d.get("removed_blocks") is not None]


def write_scan(scores: BlockScores, out: Path, model: str = "") -> dict:
    """A scan's JSON and its chart beside it, both or neither (temporary names, then renamed)."""
    payload = {"model": model, **scores.to_dict()}
    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_png = png.with_name(f".{png.stem}.tmp.png")
    try:
        plot_block_scores(scores, tmp_png, title=f"{model}: {scores.metric}")
        write_json_atomically(out, payload)
        os.replace(tmp_png, png)
    finally:
        tmp_png.unlink(missing_ok=True)
    return {**payload, "json_path": str(out), "png_path": str(png)}


def results_lines(model: str, results: dict) -> list[str]:
    """The lines `prunekit eval` prints for one results dict."""
    lines = [f"{model}: {results['blocks']} blocks, {results['parameters'] / 1e6:.1f}M parameters"]
    for result in results.get("perplexity", {}).values():
        lines.append(
            f"  perplexity {result['perplexity']:.3f} on {result['data']} ({result['windows']} windows x "
            f"{result['seq_len']} tokens), {result['tokens_per_second']:.0f} tokens/s forward"
        )
    for task, values in results.get("tasks", {}).items():
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k in ("acc", "acc_norm", "perplexity"))
        lines.append(f"  {task}: {metrics} ({values.get('items')} items, {values['seconds']:.0f} s)")
    for language, result in results.get("multilingual", {}).items():
        lines.append(f"  {language}: perplexity {result['perplexity']:.2f}")
    if "speed" in results:
        speed = results["speed"]
        lines.append(
            f"  prefill {speed['prefill_tokens_per_second']:.0f} tokens/s, decode {speed['decode_tokens_per_second']:.1f} "
            f"tokens/s, peak memory {speed['peak_memory_bytes'] / 2**20:.0f} MiB ({speed['peak_memory_kind']})"
        )
    return lines
