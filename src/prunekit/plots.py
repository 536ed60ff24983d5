"""PNG charts (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path



def pyplot():
    """matplotlib's pyplot on the headless backend, imported when a plot is drawn (it costs every command
    half a second of start-up otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_block_scores(scores, path: str | Path, title: str = "", highlight: list[int] | None = None) -> Path:
    """Bar chart of per-block importance; `highlight` (default: the lowest fifth) is drawn in red."""
    values = scores.scores
    lowest = set(highlight) if highlight is not None else set(scores.ranking()[: max(1, len(values) // 5)])
    plt = pyplot()
    colors = ["tab:red" if i in lowest else "tab:blue" for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(max(6, len(values) * 0.3), 3.5))
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xlabel("block" if scores.span == 1 else f"span start (span {scores.span})")
    ax.set_ylabel(f"{scores.metric} (higher = more important)")
    ax.set_title(title or f"block importance: {scores.metric} ({scores.data.get('tokens', '?')} tokens)")
    ax.set_xticks(range(len(values)))
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
