"""Text sources behind a data SPEC: a hub dataset name, a local file, or `builtin`.

Every source yields one string. `purpose` picks the split where a dataset has a standard one:
calibration reads training text, evaluation reads test/validation text, so the two never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prunekit.errors import PrunekitError
from prunekit.jsonfiles import loads_limited

Purpose = Literal["calibration", "evaluation"]


@dataclass(frozen=True)
class HubDataset:
    """A hub dataset with the config, splits and joining rule the field's papers use."""

    path: str
    name: str | None
    splits: dict[str, str]  # purpose -> split
    field: str = "text"
    joiner: str = "\n\n"
    data_files: dict[str, str] | None = None
    max_rows: int | None = None  # long corpora: the first rows are plenty for calibration/perplexity


HUB_DATASETS: dict[str, HubDataset] = {
    "wikitext2": HubDataset("wikitext", "wikitext-2-raw-v1", {"calibration": "train", "evaluation": "test"}),
    "c4": HubDataset(
        "allenai/c4",
        None,
        {"calibration": "train", "evaluation": "validation"},
        data_files={"train": "en/c4-train.00000-of-01024.json.gz", "validation": "en/c4-validation.00000-of-00008.json.gz"},
        max_rows=3000,
    ),
    "ptb": HubDataset(
        "ptb-text-only/ptb_text_only", "penn_treebank", {"calibration": "train", "evaluation": "test"}, field="sentence", joiner=" "
    ),
}
HUB_ALIASES = {"wikitext": "wikitext2", "wikitext-2": "wikitext2", "wikitext2-raw": "wikitext2", "c4-en": "c4", "penn_treebank": "ptb"}
LOCAL_SUFFIXES = (".txt", ".raw", ".jsonl", ".json")


@dataclass(frozen=True)
class TextSource:
    text: str
    description: str


def builtin_text(purpose: Purpose) -> str:
    """Python's own documentation topics: text present on every Python install, no download.

    Calibration uses the first half of the topics, evaluation the second half.
    """
    from pydoc_data.topics import topics

    keys = sorted(topics)
    half = len(keys) // 2
    chosen = keys[:half] if purpose == "calibration" else keys[half:]
    return "\n\n".join(topics[k] for k in chosen)


def wikitext_rows_to_text(raw: str) -> str:
    """WikiText raw files hold one HF row per line; the GPTQ/lm-eval string joins rows with blank lines."""
    rows = ["" if line.strip() == "" else line for line in raw.splitlines(keepends=True)]
    rows = [row.replace("\r\n", "\n") for row in rows]
    return "\n\n".join(rows)


def text_of_record(record, path: Path, line_no: int, field: str) -> str:
    """A record's text: a string, or the `field` of an object (never a guess at another string field)."""
    if isinstance(record, str):
        return record
    if isinstance(record, dict) and isinstance(record.get(field), str):
        return record[field]
    fields = f" (its fields: {', '.join(map(str, record))[:200]})" if isinstance(record, dict) else ""
    raise PrunekitError(f"{path}:{line_no}: no '{field}' string in this record{fields}; name the text field with `text_field`")


def read_local_text(path: Path, field: str = "text") -> str:
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PrunekitError(f"{path} is not UTF-8 text") from error
    if suffix == ".raw":
        return wikitext_rows_to_text(raw)
    if suffix == ".txt":
        return raw
    if suffix == ".jsonl":
        records = [loads_limited(line, f"{path}:{i + 1}") for i, line in enumerate(raw.splitlines()) if line.strip()]
    else:
        data = loads_limited(raw, str(path))
        records = data.get(field, data.get("data")) if isinstance(data, dict) else data
        if not isinstance(records, list):
            raise PrunekitError(f"{path}: expected a list of strings or of {{'text': ...}} records")
    return "\n\n".join(text_of_record(r, path, i + 1, field) for i, r in enumerate(records))


def load_hub_text(key: str, dataset: HubDataset, split: str) -> str:
    try:
        import datasets
    except ImportError as error:
        raise PrunekitError(
            f"data '{key}' comes from the Hugging Face Hub and needs `pip install datasets` (or pass a local file)"
        ) from error
    try:
        kwargs = {"data_files": dataset.data_files} if dataset.data_files else {}
        rows = datasets.load_dataset(dataset.path, dataset.name, split=split, **kwargs)
    except Exception as error:
        raise PrunekitError(
            f"cannot load '{key}' ({dataset.path}, split {split}) from the Hub: {str(error).splitlines()[0][:160]}; "
            "pass a local file instead"
        ) from error
    if dataset.max_rows is not None:
        rows = rows.select(range(min(dataset.max_rows, len(rows))))
    return dataset.joiner.join(rows[dataset.field])


def load_text(spec: str, purpose: Purpose = "calibration", text_field: str = "text") -> TextSource:
    """The text behind a data SPEC.

    SPEC forms: `builtin`; a local .txt/.raw/.jsonl/.json file; a known hub name (wikitext2, c4, ptb),
    optionally with an explicit split (`wikitext2:train`); or any hub dataset id `org/name[:split]`
    whose rows have a `text` field. Records of local JSON/JSONL files and hub ids are read from
    `text_field`.
    """
    spec = str(spec).strip()
    if spec == "builtin":
        return TextSource(builtin_text(purpose), f"builtin (pydoc topics, {purpose} half)")
    path = Path(spec).expanduser()
    if path.is_dir():
        raise PrunekitError(f"data {path} is a directory; pass one .txt, .raw, .jsonl or .json file")
    if path.suffix.lower() in LOCAL_SUFFIXES or path.exists():
        if not path.is_file():
            raise PrunekitError(f"data file not found: {path}")
        if path.suffix.lower() not in LOCAL_SUFFIXES:
            raise PrunekitError(f"unsupported data file {path}; use .txt, .raw, .jsonl or .json")
        return TextSource(read_local_text(path, text_field), str(path))
    name, _, split = spec.partition(":")
    key = HUB_ALIASES.get(name.lower(), name.lower())
    if key in HUB_DATASETS:
        dataset = HUB_DATASETS[key]
        chosen = split or dataset.splits[purpose]
        return TextSource(load_hub_text(key, dataset, chosen), f"{key}:{chosen}")
    if "/" in name:
        dataset = HubDataset(name, None, {"calibration": "train", "evaluation": "test"}, field=text_field)
        chosen = split or dataset.splits[purpose]
        return TextSource(load_hub_text(name, dataset, chosen), f"{name}:{chosen}")
    raise PrunekitError(f"unknown data '{spec}': use builtin, a .txt/.raw/.jsonl/.json file, or one of {', '.join(sorted(HUB_DATASETS))}")
