"""The one evaluation every benchmark runs, precise enough to rank methods, and the paired comparison
of two of its results.

WikiText-2 perplexity (48 x 512 windows by default), C4 perplexity on the first 1,000 documents of the
validation shard (the papers' C4 set; left out where the file is absent), the papers' seven zero-shot tasks plus LAMBADA
with up to 500 items each (all of a smaller task), with lm-eval's standard errors and every item's
score, and FLORES per-language perplexity. `compare_results` says, per measurement and for the task
mean, whether a contender is better, worse or tied with a reference on the same items.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prunekit.data.windows import load_windows
from prunekit.evaluation.multilingual import multilingual_perplexity
from prunekit.evaluation.perplexity import perplexity
from prunekit.evaluation.significance import compare, verdict
from prunekit.evaluation.tasks import run_tasks

# The first 1,000 documents of C4's first validation shard: the papers' C4 perplexity set, never trained on.
C4_VALIDATION = "c4-validation.00000-of-00008.first1000.jsonl"
PAPER_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "lambada_openai")


@dataclass
class StandardEvaluation:
    """What is measured; paths default to prunekit's shared data layout under `data_dir`."""

    data_dir: str
    wikitext: str | None = None  # default: data_dir/wikitext-2-raw-v1/wiki.test.raw
    wikitext_windows: int = 48
    c4: str | None = None  # default: data_dir/c4/<C4_VALIDATION>, measured where it exists
    c4_windows: int = 48  # 0 leaves C4 out
    seq_len: int = 512
    tasks: tuple[str, ...] = PAPER_TASKS
    items_per_task: int | None = 500  # None: every item
    flores_windows: int | None = 4  # per language; 0 leaves FLORES out
    languages: tuple[str, ...] | None = None
    task_batch_size: int = 8
    device: str = "cpu"
    progress: bool = False

    @property
    def wikitext_path(self) -> str:
        return self.wikitext or str(Path(self.data_dir) / "wikitext-2-raw-v1" / "wiki.test.raw")

    @property
    def c4_path(self) -> str | None:
        """The C4 evaluation documents, or None where they are not measured (no file, or 0 windows)."""
        if self.c4_windows == 0:
            return None
        path = Path(self.c4) if self.c4 else Path(self.data_dir) / "c4" / C4_VALIDATION
        return str(path) if self.c4 or path.exists() else None


@dataclass
class StandardResult:
    wikitext: dict
    c4: dict | None = None
    tasks: dict = field(default_factory=dict)
    flores: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def main_metric(task: dict) -> str:
    """acc_norm where lm-eval reports it (the papers' choice for multiple choice), else acc."""
    return "acc_norm" if "acc_norm" in task else "acc"


def evaluate_standard(model, tokenizer, settings: StandardEvaluation) -> dict:
    """Every measurement of `settings` on one model; JSON-able, with per-window and per-item scores."""
    seconds = {}
    started = time.perf_counter()
    windows = load_windows(
        settings.wikitext_path, tokenizer, purpose="evaluation", num_windows=settings.wikitext_windows, seq_len=settings.seq_len
    )
    wikitext = perplexity(model, windows, device=settings.device, progress=settings.progress)
    seconds["wikitext"] = time.perf_counter() - started
    started = time.perf_counter()
    c4 = None
    if settings.c4_path is not None:
        c4_windows = load_windows(
            settings.c4_path, tokenizer, purpose="evaluation", num_windows=settings.c4_windows, seq_len=settings.seq_len
        )
        c4 = perplexity(model, c4_windows, device=settings.device, progress=settings.progress).to_dict()
        seconds["c4"] = time.perf_counter() - started
    started = time.perf_counter()
    tasks = (
        run_tasks(
            model,
            tokenizer,
            list(settings.tasks),
            data_dir=settings.data_dir,
            limit=settings.items_per_task,
            batch_size=settings.task_batch_size,
            device=settings.device,
            progress=settings.progress,
            item_scores=True,
        )
        if settings.tasks
        else {}
    )
    seconds["tasks"] = time.perf_counter() - started
    started = time.perf_counter()
    flores = {}
    if settings.flores_windows != 0:
        flores = multilingual_perplexity(
            model,
            tokenizer,
            Path(settings.data_dir) / "flores200",
            languages=list(settings.languages or []) or None,
            seq_len=settings.seq_len,
            max_windows=settings.flores_windows,
            device=settings.device,
            progress=settings.progress,
        )
    seconds["flores"] = time.perf_counter() - started
    result = StandardResult(wikitext.to_dict(), c4, tasks, flores, seconds, asdict(settings))
    return result.to_dict()


def task_mean(result: dict) -> tuple[float, float]:
    """Mean of the tasks' main metrics and its standard error (tasks independent: sqrt(sum se^2) / n)."""
    values = [(t[main_metric(t)], t.get(f"{main_metric(t)}_stderr", float("nan"))) for t in result["tasks"].values()]
    mean = sum(v for v, _ in values) / len(values)
    return mean, math.sqrt(sum(se**2 for _, se in values)) / len(values)


def mean_difference(per_task: dict) -> dict:
    """The task mean's paired difference from the tasks' own (different items, so their errors add independently)."""
    mean = sum(t["difference"] for t in per_task.values()) / len(per_task)
    se = math.sqrt(sum(t["standard_error"] ** 2 for t in per_task.values())) / len(per_task)
    return {"difference": mean, "standard_error": se, "verdict": verdict(mean, se)}


def compare_results(reference: dict, other: dict) -> dict:
    """`other` against `reference`, paired on the same windows and items: WikiText-2 and C4 where both have it
    (mean NLL per window, lower is better), each task's main metric, the task mean, and the FLORES ratios (mean and worst)."""
    out = {"wikitext": compare(reference["wikitext"]["window_nll"], other["wikitext"]["window_nll"], higher_is_better=False)}
    if reference.get("c4") and other.get("c4"):
        out["c4"] = compare(reference["c4"]["window_nll"], other["c4"]["window_nll"], higher_is_better=False)
    per_task = {}
    for name, task in reference["tasks"].items():
        metric = main_metric(task)
        per_task[name] = {"metric": metric, **compare(task["item_scores"][metric], other["tasks"][name]["item_scores"][metric])}
    out["tasks"] = per_task
    if per_task:
        out["task_mean"] = mean_difference(per_task)
    ratios = {
        lang: other["flores"][lang]["perplexity"] / reference["flores"][lang]["perplexity"]
        for lang in reference.get("flores", {})
        if lang in other.get("flores", {})
    }
    if ratios:
        worst = max(ratios, key=ratios.get)
        out["flores"] = {"mean_ratio": sum(ratios.values()) / len(ratios), "worst_ratio": ratios[worst], "worst_language": worst}
    return out
