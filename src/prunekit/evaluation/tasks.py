"""Zero-shot tasks through lm-evaluation-harness, on the in-memory model.

Task names are lm-eval's own (`piqa`, `arc_easy`, `hellaswag`, ...). Without `data_dir` lm-eval
loads its datasets from the Hub as usual. With `data_dir`, the tasks below read local files laid
out as in prunekit's shared data folder; each local file is converted to the schema of lm-eval's
own dataset and evaluated with the same prompt, choices and metrics as lm-eval's task config.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import PrunekitError

DEFAULT_TASKS = ("piqa", "hellaswag", "arc_easy", "boolq", "winogrande", "lambada_openai")
_MC = "multiple_choice"
_ACC = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
_ACC_NORM = _ACC + [{"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]


# -- converters: local files -> records in the schema of lm-eval's dataset --------------------
def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise PrunekitError(f"{path} is not valid JSON lines ({error.msg} at line {error.lineno})") from error


def _one_file(folder: Path, pattern: str) -> Path:
    files = sorted(folder.glob(pattern))
    if not files:
        raise PrunekitError(f"no {pattern} file in {folder}")
    return files[0]


def _piqa(folder: Path) -> list[dict]:
    docs = _read_jsonl(folder / "valid.jsonl")
    labels = [int(x) for x in (folder / "valid-labels.lst").read_text().split()]
    if len(labels) != len(docs):
        raise PrunekitError(f"{folder}: {len(docs)} questions but {len(labels)} labels")
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": y} for d, y in zip(docs, labels)]


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag cleaning (WikiHow bracket artifacts, double spaces)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(folder: Path) -> list[dict]:
    """Six lines per item: 'activity_label: ctx', the label, then the four endings."""
    lines = _one_file(folder, "*.txt").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if len(lines) % 6:
        raise PrunekitError(f"{folder}: hellaswag text must have 6 lines per item, found {len(lines)} lines")
    return [
        {
            "query": hellaswag_preprocess(lines[i]),
            "label": int(lines[i + 1]),
            "choices": [hellaswag_preprocess(e) for e in lines[i + 2 : i + 6]],
        }
        for i in range(0, len(lines), 6)
    ]


def _arc(folder: Path) -> list[dict]:
    return _read_jsonl(_one_file(folder, "*.jsonl"))


def _boolq(folder: Path) -> list[dict]:
    """llm-foundry rows ('Passage: ...\\nQuestion: ...?', gold) back to passage/question/label."""
    records = []
    for row in _read_jsonl(_one_file(folder, "*.jsonl")):
        passage, sep, question = row["query"].rpartition("\nQuestion: ")
        if not sep or not passage.startswith("Passage: "):
            raise PrunekitError(f"{folder}: unexpected boolq query format: {row['query'][:60]!r}")
        records.append({"passage": passage[len("Passage: ") :], "question": question.rstrip().removesuffix("?"), "label": int(row["gold"])})
    return records


_OBQA_CHOICE = re.compile(r"\(([A-Z])\) (.*?)(?= \([A-Z]\) |$)")


def _openbookqa(folder: Path) -> list[dict]:
    """The original release's TSV (ID, Question Stem, Choices '(A) .. (B) ..', Complete Question,
    Answer Key) in the schema of the Hub's allenai/openbookqa."""
    lines = _one_file(folder, "*.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if header[:3] != ["ID", "Question Stem", "Choices"] or "Answer Key" not in header:
        raise PrunekitError(f"{folder}: expected the OpenBookQA TSV header 'ID, Question Stem, Choices, ..., Answer Key'")
    key = header.index("Answer Key")
    records = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        choices = _OBQA_CHOICE.findall(cells[2]) if len(cells) > key else []
        if not choices or cells[key].strip() not in [label for label, _ in choices]:
            raise PrunekitError(f"{folder}: line {number} is not an OpenBookQA question with lettered choices and an answer key")
        records.append(
            {
                "id": cells[0],
                "question_stem": cells[1],
                "answerKey": cells[key].strip(),
                "choices": {"text": [text for _, text in choices], "label": [label for label, _ in choices]},
            }
        )
    return records


def _winogrande(folder: Path) -> list[dict]:
    return _read_jsonl(_one_file(folder, "*.jsonl"))


def _lambada(folder: Path) -> list[dict]:
    return [{"text": row["context"].rstrip(" ") + " " + row["continuation"].strip()} for row in _read_jsonl(_one_file(folder, "*.jsonl"))]


# -- lm-eval task configs (the same prompts and metrics as lm-eval's own tasks) ---------------
@dataclass(frozen=True)
class LocalTask:
    folder: str  # sub-folder of data_dir
    convert: Callable[[Path], list[dict]]
    config: dict


def _winogrande_text(doc):
    return int(doc["gold"])


def _winogrande_choices(doc):
    return doc["context_options"]


def _winogrande_target(doc):
    return doc["continuation"].strip()


_ARC_CONFIG = {
    "output_type": _MC,
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "{{choices.label.index(answerKey)}}",
    "doc_to_choice": "{{choices.text}}",
    "metric_list": _ACC_NORM,
}
LOCAL_TASKS: dict[str, LocalTask] = {
    "piqa": LocalTask(
        "piqa",
        _piqa,
        {
            "output_type": _MC,
            "doc_to_text": "Question: {{goal}}\nAnswer:",
            "doc_to_target": "label",
            "doc_to_choice": "{{[sol1, sol2]}}",
            "metric_list": _ACC_NORM,
        },
    ),
    "hellaswag": LocalTask(
        "hellaswag",
        _hellaswag,
        {
            "output_type": _MC,
            "doc_to_text": "{{query}}",
            "doc_to_target": "{{label}}",
            "doc_to_choice": "choices",
            "metric_list": _ACC_NORM,
        },
    ),
    "arc_easy": LocalTask("arc_easy", _arc, _ARC_CONFIG),
    "arc_challenge": LocalTask("arc_challenge", _arc, _ARC_CONFIG),
    "openbookqa": LocalTask(
        "openbookqa",
        _openbookqa,
        {
            "output_type": _MC,
            "doc_to_text": "{{question_stem}}",
            "doc_to_target": "{{choices.label.index(answerKey.lstrip())}}",
            "doc_to_choice": "{{choices.text}}",
            "metric_list": _ACC_NORM,
        },
    ),
    "boolq": LocalTask(
        "boolq",
        _boolq,
        {
            "output_type": _MC,
            "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
            "doc_to_target": "label",
            "doc_to_choice": ["no", "yes"],
            "metric_list": _ACC,
        },
    ),
    "winogrande": LocalTask(
        "winogrande",
        _winogrande,
        {
            "output_type": _MC,
            "doc_to_text": _winogrande_text,
            "doc_to_target": _winogrande_target,
            "doc_to_choice": _winogrande_choices,
            "metric_list": _ACC,
        },
    ),
    "lambada_openai": LocalTask(
        "lambada",
        _lambada,
        {
            "output_type": "loglikelihood",
            "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
            "doc_to_target": "{{' '+text.split(' ')[-1]}}",
            "metric_list": [
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            ],
        },
    ),
}


def local_task_spec(name: str, data_dir: str | Path, workdir: Path) -> dict:
    """An lm-eval task config dict that reads the converted local file for `name`."""
    if name not in LOCAL_TASKS:
        raise PrunekitError(
            f"task '{name}' has no local-file loader; local tasks: {', '.join(LOCAL_TASKS)} (drop `data_dir` to use lm-eval's own)"
        )
    task = LOCAL_TASKS[name]
    folder = Path(data_dir).expanduser() / task.folder
    if not folder.is_dir():
        raise PrunekitError(f"task '{name}' needs the folder {folder} (laid out as in prunekit's shared data)")
    records = task.convert(folder)
    if not records:
        raise PrunekitError(f"task '{name}': {folder} holds no items")
    path = workdir / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {
        "task": f"{name}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "metadata": {"version": 1.0, "source": str(folder)},
        **task.config,
    }


@functools.lru_cache(maxsize=1)
def task_manager():
    """lm-eval's task index (built once: indexing every task config takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(verbosity="ERROR")


def known_task_names() -> list[str]:
    return list(task_manager().all_tasks)


def check_task_names(names: list[str], local: bool) -> None:
    """Unknown names get a one-line error listing close matches."""
    known = set(LOCAL_TASKS) if local else set(known_task_names())
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PrunekitError(f"unknown task '{name}'{hint}")


def _metric_values(task_result: dict) -> dict:
    """{'acc,none': 0.5, 'acc_stderr,none': ...} -> {'acc': 0.5, 'acc_stderr': ...}."""
    out = {}
    for key, value in task_result.items():
        metric, _, _filter = key.partition(",")
        if isinstance(value, (int, float)) and metric not in ("alias", "sample_len"):
            out[metric] = float(value)
    return out


def _item_scores(samples: list[dict]) -> dict[str, list[float]]:
    """Per-item values of every numeric metric, ordered by lm-eval's doc id."""
    ordered = sorted(samples, key=lambda s: s["doc_id"])
    metrics = ordered[0]["metrics"] if ordered else []
    return {m: [float(s[m]) for s in ordered] for m in metrics if all(isinstance(s.get(m), (int, float)) for s in ordered)}


def run_tasks(
    model,
    tokenizer,
    tasks: list[str],
    *,
    data_dir: str | Path | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    num_fewshot: int | None = None,
    progress: bool = True,
    item_scores: bool = False,
) -> dict:
    """Evaluate the in-memory model on lm-eval tasks; returns {task: {metric: value, 'seconds': s, 'items': n}}.

    `item_scores=True` adds each item's score per metric, in item order ('item_scores': {'acc': [1.0,
    0.0, ...]}), so two models scored on the same items can be compared pairwise (evaluation.significance).
    """
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        raise PrunekitError("zero-shot tasks need lm-eval: `pip install 'prunekit[eval]'`") from error
    check_task_names(tasks, local=data_dir is not None)
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="prunekit-tasks-") as workdir:
        for name in tasks:
            spec = local_task_spec(name, data_dir, Path(workdir)) if data_dir is not None else name
            started = time.perf_counter()
            out = simple_evaluate(
                model=lm,
                tasks=[spec],
                limit=limit,
                num_fewshot=num_fewshot,
                log_samples=item_scores,
                bootstrap_iters=1000,
                verbosity="ERROR",
                task_manager=task_manager(),
            )
            seconds = time.perf_counter() - started
            for task_name, values in out["results"].items():
                samples = out.get("n-samples", {}).get(task_name, {})
                results[task_name] = {
                    **_metric_values(values),
                    "seconds": seconds,
                    "items": samples.get("effective", samples.get("original")),
                    "source": "local" if data_dir is not None else "lm-eval",
                }
                if item_scores:
                    results[task_name]["item_scores"] = _item_scores(out.get("samples", {}).get(task_name, []))
    model.train(was_training)
    return results
