"""PNG charts (matplotlib, headless). Every chart prints its values, and every drawing function returns
what the saved figure holds (`figure_data`), so a test can check the chart's numbers rather than a file."""

from __future__ import annotations

from pathlib import Path

RED, BLUE, GREY = "tab:red", "tab:blue", "tab:gray"


def pyplot():
    """matplotlib's pyplot on the headless backend, imported when a plot is drawn (it costs every command
    half a second of start-up otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_data(fig) -> dict:
    """What each panel of `fig` shows: title, axis labels, bar heights, line points and printed labels."""
    panels = []
    for ax in fig.axes:
        bars = [float(p.get_height()) for container in ax.containers for p in container.patches]
        lines = [[(float(x), float(y)) for x, y in zip(*line.get_data())] for line in ax.get_lines() if line.get_label() != "_reference"]
        panels.append(
            {
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "bars": bars,
                "lines": lines,
                "texts": [t.get_text() for t in ax.texts],
                "xticklabels": [t.get_text() for t in ax.get_xticklabels()],
            }
        )
    return {"panels": panels}


def _save(fig, path: str | Path) -> dict:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    data = figure_data(fig)
    plt.close(fig)
    return data


def _label_bars(ax, fmt: str) -> None:
    for container in ax.containers:
        ax.bar_label(container, fmt=fmt, fontsize=6, padding=1)


def draw_block_scores(ax, scores: list[float], highlight: set[int], ylabel: str, xlabel: str = "block") -> None:
    colors = [RED if i in highlight else BLUE for i in range(len(scores))]
    ax.bar(range(len(scores)), scores, color=colors)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(len(scores)))
    ax.tick_params(axis="x", labelsize=6)


def plot_block_scores(scores, path: str | Path, title: str = "", highlight: list[int] | None = None) -> dict:
    """Bar chart of per-block importance; `highlight` (default: the lowest fifth) is drawn in red."""
    values = scores.scores
    lowest = set(highlight) if highlight is not None else set(scores.ranking()[: max(1, len(values) // 5)])
    fig, ax = pyplot().subplots(figsize=(max(6, len(values) * 0.3), 3.5))
    xlabel = "block" if scores.span == 1 else f"span start (span {scores.span})"
    draw_block_scores(ax, values, lowest, f"{scores.metric} (higher = more important)", xlabel)
    ax.set_title(title or f"block importance: {scores.metric} ({scores.data.get('tokens', '?')} tokens)")
    return _save(fig, path)


def draw_grouped_bars(ax, groups: list[str], series: list[tuple[str, list[float]]], fmt: str) -> None:
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series):
        ax.bar([i + k * width for i in range(len(groups))], values, width, label=label)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(groups))], groups, rotation=20 if len(groups) > 3 else 0)
    _label_bars(ax, fmt)
    if len(series) > 1:
        ax.legend(fontsize=7)


def plot_grouped_bars(
    path: str | Path,
    groups: list[str],
    series: list[tuple[str, list[float]]],
    *,
    title: str,
    ylabel: str,
    fmt: str = "%.2f",
    reference: float | None = None,
    log: bool = False,
) -> dict:
    """One group of bars per `groups` entry, one bar per series, each with its value printed."""
    fig, ax = pyplot().subplots(figsize=(max(6, len(groups) * (0.6 + 0.5 * len(series))), 3.8))
    draw_grouped_bars(ax, groups, series, fmt)
    if reference is not None:
        ax.axhline(reference, color="black", linewidth=0.8, label="_reference")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_measured_steps(path: str | Path, series: list[tuple[str, list[tuple[int, float]]]], *, title: str, ylabel: str) -> dict:
    """Lines through measured points only (blocks removed so far, value), each point labelled."""
    fig, ax = pyplot().subplots(figsize=(6.5, 3.8))
    for label, points in series:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", label=label)
        for x, y in points:
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    ax.set_xlabel("blocks removed")
    ax.set_ylabel(ylabel)
    ax.set_xticks(sorted({p[0] for _, points in series for p in points}))
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def draw_layer_widths(ax, kept: list[int], before: int, what: str) -> None:
    ax.bar(range(len(kept)), kept, color=BLUE)
    ax.axhline(before, color=GREY, linestyle="--", linewidth=0.8, label="_reference")
    ax.text(len(kept) - 0.5, before, f"before: {before}", ha="right", va="bottom", fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"kept {what}")
    ax.set_xticks(range(len(kept)))
    ax.tick_params(axis="x", labelsize=6)
    _label_bars(ax, "%d")


def plot_layer_widths(path: str | Path, panels: list[tuple[str, list[int], int]], *, title: str) -> dict:
    """Kept width per layer, one panel per (what, kept per layer, width before)."""
    layers = max(len(kept) for _, kept, _ in panels)
    fig, axes = pyplot().subplots(len(panels), 1, figsize=(max(6, layers * 0.35), 2.8 * len(panels)), squeeze=False)
    for ax, (what, kept, before) in zip(axes[:, 0], panels):
        draw_layer_widths(ax, kept, before, what)
        ax.set_title(f"{title}: {what}" if len(panels) > 1 else title, fontsize=9)
    return _save(fig, path)


def plot_stage_panels(path: str | Path, panels: list[dict], *, title: str) -> dict:
    """One panel per stage of a multi-stage run. A panel is {"title", "kind": "blocks" | "widths" | "bars", ...}:
    blocks: scores (or a 0/1 mask) per block with `highlight`; widths: `kept` per layer and `before`;
    bars: `labels` and `values`."""
    fig, axes = pyplot().subplots(len(panels), 1, figsize=(7, 2.8 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        if panel["kind"] == "blocks":
            draw_block_scores(ax, panel["values"], set(panel["highlight"]), panel["ylabel"])
        elif panel["kind"] == "widths":
            draw_layer_widths(ax, panel["kept"], panel["before"], panel["what"])
        else:
            ax.bar(panel["labels"], panel["values"], color=BLUE)
            ax.set_ylabel(panel.get("ylabel", ""))
            _label_bars(ax, panel.get("fmt", "%.3g"))
        ax.set_title(panel["title"], fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_pareto(path: str | Path, points: list[dict], *, title: str, max_bytes: int | None = None) -> dict:
    """Two panels, quality against file size and against decode speed-up: one marker per contender kind
    (`points`: name, kind, mib, speedup, perplexity, chosen); the chosen one is circled."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = {"dense": ("s", GREY), "shortgpt": ("v", BLUE), "liar-uniform": ("^", "tab:green"), "candidate": ("o", RED)}
    for ax, key, xlabel in ((axes[0], "mib", "GGUF file (MiB)"), (axes[1], "speedup", "decode speed-up over dense at the same type")):
        for kind, (marker, colour) in markers.items():
            chosen = [p for p in points if p["kind"] == kind]
            if chosen:
                ax.scatter([p[key] for p in chosen], [p["perplexity"] for p in chosen], marker=marker, color=colour, label=kind)
        for p in points:
            ax.annotate(p["name"], (p[key], p["perplexity"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if p.get("chosen"):
                ax.scatter([p[key]], [p["perplexity"]], s=220, facecolors="none", edgecolors="black")
        if key == "mib" and max_bytes is not None:
            ax.axvline(max_bytes / 2**20, color=GREY, linestyle="--", label="_reference")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out perplexity (llama.cpp)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
