"""`prunekit report`: side-by-side tables and plots from `prunekit eval --out` results files.

Ratios are taken against a baseline (the dense model): by default the result with the most blocks.
The report is written as Markdown and HTML (same tables) with PNG plots, atomically.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import NamedTuple

from prunekit.errors import PrunekitError
from prunekit.jsonfiles import read_json_object, write_json_atomically
from prunekit.models.export import output_dir
from prunekit.plots import plot_block_scores, plot_grouped_bars, plot_layer_widths, plot_measured_steps, plot_stage_panels
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


def _stages(plan: dict | None) -> list[dict]:
    """(method, details) of every stage of a plan as dicts; a format-1 plan is its own single stage."""
    if not plan:
        return []
    if "stages" in plan:
        return [{"method": s.get("method", "?"), **(s.get("details") or {})} for s in plan["stages"]]
    return [{**plan}]


def _measured_steps(plan: dict | None) -> list[tuple[int, float]]:
    """(blocks removed so far, held-out perplexity) at every IteRABRe point that was measured: after each
    removal and after its recovery."""
    points, removed = [], 0
    measured = ("heldout_perplexity_after_removal", "heldout_perplexity_after_recovery")
    for stage in _stages(plan):  # stages whose steps log held-out perplexity (IteRABRe's iterations)
        steps = stage.get("steps")
        if not isinstance(steps, list):  # a recovery stage's `steps` is its count of training steps
            continue
        for step in steps:
            if not isinstance(step, dict) or not any(key in step for key in measured):
                continue
            gone = step.get("removed", [])
            removed += len(gone) if isinstance(gone, list) else 1
            for key in measured:
                if isinstance(step.get(key), (int, float)):
                    points.append((removed, float(step[key])))
    return points


def _width_panels(stage: dict) -> list[tuple[str, list[int], int]]:
    layers = stage.get("layers") or []
    panels = []
    if (
        layers
        and stage.get("intermediate_size_before")
        and any(layer.get("channels") != stage["intermediate_size_before"] for layer in layers)
    ):
        panels.append(("FFN channels", [layer["channels"] for layer in layers], stage["intermediate_size_before"]))
    if layers and stage.get("kv_heads_before") and any(layer.get("kv_groups") != stage["kv_heads_before"] for layer in layers):
        panels.append(("KV head groups", [layer["kv_groups"] for layer in layers], stage["kv_heads_before"]))
    return panels


def _stage_panel(number: int, stage: dict) -> dict | None:
    """What one stage of a multi-stage run did, as a panel of plot_stage_panels."""
    method, title = stage.get("method", "?"), f"stage {number}: {stage.get('method', '?')}"
    if stage.get("scores") and stage.get("removed_blocks") is not None:
        removed = stage["removed_blocks"]
        return {
            "kind": "blocks",
            "title": f"{title} removed {removed} (red)",
            "values": stage["scores"],
            "highlight": removed,
            "ylabel": stage.get("metric") or "score",
        }
    if widths := _width_panels(stage):
        what, kept, before = widths[0]
        return {"kind": "widths", "title": f"{title}: kept {what} per layer", "kept": kept, "before": before, "what": what}
    if method == "recover" and isinstance(stage.get("loss_first"), (int, float)):
        labels, values = ["objective before", "objective after"], [stage["loss_first"], stage["loss_last"]]
        if isinstance(stage.get("heldout_perplexity_before"), (int, float)):
            labels += ["held-out ppl before", "held-out ppl after"]
            values += [stage["heldout_perplexity_before"], stage["heldout_perplexity_after"]]
        return {"kind": "bars", "title": f"{title} on {stage.get('tokens', '?')} tokens", "labels": labels, "values": values}
    blocks = stage.get("replaced_blocks") or stage.get("removed_blocks")
    if blocks is not None and stage.get("num_blocks_before"):
        mask = [1.0 if i in set(blocks) else 0.0 for i in range(stage["num_blocks_before"])]
        verb = "replaced" if stage.get("replaced_blocks") else "removed"
        return {"kind": "blocks", "title": f"{title} {verb} {blocks}", "values": mask, "highlight": blocks, "ylabel": verb}
    if "blocks_before" in stage and "blocks_after" in stage:  # a stage that grew the model
        return {
            "kind": "bars",
            "title": title,
            "labels": ["blocks before", "blocks after"],
            "values": [stage.get("blocks_before", 0), stage.get("blocks_after", 0)],
            "fmt": "%d",
        }
    return None


class Plot(NamedTuple):
    title: str
    name: str  # file name in the report folder
    data: dict  # what the figure shows (plots.figure_data)


def make_plots(results: list[dict], base: dict, folder: Path) -> list[Plot]:
    """PNG plots chosen by what was measured and what each run did."""
    plots: list[Plot] = []

    def add(title: str, name: str, draw) -> None:
        plots.append(Plot(title, name, draw(folder / name)))

    specs = sorted({spec for r in results for spec in r.get("perplexity", {})})
    if specs:
        series = [(r["label"], [r.get("perplexity", {}).get(s, {}).get("perplexity", float("nan")) for s in specs]) for r in results]
        title = "Perplexity per model (lower is better)"
        add(title, "perplexity.png", lambda path: plot_grouped_bars(path, specs, series, title=title, ylabel="perplexity"))

    steps = [(r["label"], _measured_steps(r.get("plan"))) for r in results]
    steps = [(label, points) for label, points in steps if points]
    if steps:
        title = "Held-out perplexity measured during iterative pruning (after each removal and each recovery)"
        add(title, "perplexity-steps.png", lambda path: plot_measured_steps(path, steps, title="held-out perplexity", ylabel="perplexity"))

    tasks = sorted({t for r in results for t in r.get("tasks", {})})
    if tasks:
        series = []
        for r in results:
            entries = [r.get("tasks", {}).get(t, {}) for t in tasks]
            series.append((r["label"], [e.get("acc_norm", e.get("acc", float("nan"))) for e in entries]))
        title = "Task accuracy per model (acc_norm or acc)"
        add(title, "tasks.png", lambda path: plot_grouped_bars(path, tasks, series, title=title, ylabel="accuracy", fmt="%.3f"))

    languages = sorted(base.get("multilingual", {}))
    others = [r for r in results if r is not base and r.get("multilingual")]
    if languages and others:
        series = [
            (
                r["label"],
                [
                    r["multilingual"].get(lang, {}).get("perplexity", float("nan")) / base["multilingual"][lang]["perplexity"]
                    for lang in languages
                ],
            )
            for r in others
        ]
        title = "Per-language perplexity ratio to the baseline (1.00 = nothing lost)"
        add(
            title,
            "languages.png",
            lambda path: plot_grouped_bars(path, languages, series, title=title, ylabel=f"perplexity / {base['label']}", reference=1.0),
        )

    for r in results:
        stages = _stages(r.get("plan"))
        if len(stages) > 1:
            panels = [panel for number, stage in enumerate(stages, 1) if (panel := _stage_panel(number, stage))]
            if panels:
                title = f"What each stage did: {r['label']}"
                add(title, f"stages-{len(plots)}.png", lambda path, p=panels, t=title: plot_stage_panels(path, p, title=t))
            continue
        for stage in stages:
            if stage.get("scores") and stage.get("removed_blocks") is not None:
                removed = stage["removed_blocks"]
                span = stage.get("num_blocks_before", len(stage["scores"])) - len(stage["scores"]) + 1  # scores of spans
                scores = BlockScores(stage.get("metric") or "score", stage["scores"], stage.get("data") or {}, 0.0, span=span)
                title = f"{r['label']}: {stage.get('method')} removed {removed} (red)"
                add(
                    f"Block importance behind {r['label']}",
                    f"importance-{len(plots)}.png",
                    lambda path, s=scores, t=title, h=(removed if span == 1 else [removed[0]]): plot_block_scores(
                        s, path, title=t, highlight=h
                    ),
                )
            if widths := _width_panels(stage):
                title = f"{r['label']}: kept width per layer ({stage.get('criterion', '')} criterion)"
                add(
                    f"Kept width per layer in {r['label']}",
                    f"widths-{len(plots)}.png",
                    lambda path, w=widths, t=title: plot_layer_widths(path, w, title=t),
                )
    return plots


def _markdown(tables, plots) -> str:
    lines = ["# prunekit report", ""]
    for title, rows in tables:
        lines += [f"## {title}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        lines.append("")
    for title, name, _ in plots:
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
    for title, name, _ in plots:
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
    inputs = [path for path in result_paths if not isinstance(path, dict)]
    with output_dir(out_path, overwrite=overwrite, protected=inputs) as tmp:
        plots = make_plots(results, base, tmp)
        (tmp / "report.md").write_text(_markdown(tables, plots) + "\n")
        (tmp / "report.html").write_text(_html(tables, plots) + "\n")
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return {"markdown": out_path / "report.md", "html": out_path / "report.html", "folder": out_path}


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
