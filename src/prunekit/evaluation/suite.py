"""One evaluation run of one model: perplexity, zero-shot tasks, multilingual perplexity and speed,
collected into a single JSON-able dict that `prunekit report` reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from prunekit.data.windows import load_windows
from prunekit.errors import PrunekitError
from prunekit.evaluation.multilingual import multilingual_perplexity
from prunekit.evaluation.perplexity import perplexity
from prunekit.evaluation.speed import measure_speed
from prunekit.evaluation.tasks import run_tasks
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.provenance import PLAN_FILE, library_versions

# The first 48 windows of 512 tokens (24,576 tokens) of any perplexity data, in `prunekit eval` and in
# `prune --compare` alike: the paired window-level comparisons in the benchmarks resolve 1-2% differences
# with that many, and the whole built-in evaluation half (123 windows) takes minutes on a CPU.
DEFAULT_PERPLEXITY_WINDOWS = 48


@dataclass
class EvaluationRequest:
    ppl: list[str] = field(default_factory=list)
    seq_len: int = 512
    ppl_windows: int | None = DEFAULT_PERPLEXITY_WINDOWS  # None: every window the data has
    tasks: list[str] = field(default_factory=list)
    data_dir: str | None = None
    limit: int | float | None = None
    task_batch_size: int = 8
    flores: str | None = None
    languages: list[str] | None = None
    flores_windows: int | None = None
    speed: bool = False
    batch_size: int = 1
    offload: bool = False
    text_field: str = "text"  # of .jsonl/.json perplexity data


def _plan_of(location: str) -> dict | None:
    path = Path(location) / PLAN_FILE if location else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    return None


def evaluate_model(loaded, request: EvaluationRequest, *, device, progress: bool = True, label: str | None = None) -> dict:
    """Run every requested measurement on `loaded` (a LoadedModel) and return the results dict."""

    model, tokenizer = loaded.model, loaded.tokenizer
    if not (request.ppl or request.tasks or request.flores or request.speed):
        raise PrunekitError("nothing to evaluate: give `ppl`, `tasks`, `flores` and/or `speed`")
    results: dict = {
        "model": loaded.source,
        "label": label or loaded.source,
        "blocks": ModelAdapter(model).num_blocks,
        "parameters": parameter_count(model),
        "versions": library_versions(),
    }
    plan = _plan_of(loaded.location)
    if plan is not None:
        results["plan"] = plan
    if request.ppl:
        results["perplexity"] = {}
        for spec in request.ppl:
            windows = load_windows(
                spec,
                tokenizer,
                purpose="evaluation",
                num_windows=request.ppl_windows,
                seq_len=request.seq_len,
                text_field=request.text_field,
            )
            results["perplexity"][spec] = perplexity(
                model,
                windows,
                batch_size=request.batch_size,
                device=device,
                offload=request.offload,
                progress=progress,
                label=label or loaded.source,
            ).to_dict()
    if request.tasks:
        results["tasks"] = run_tasks(
            model,
            tokenizer,
            request.tasks,
            data_dir=request.data_dir,
            limit=request.limit,
            batch_size=request.task_batch_size,
            device=str(device),
            progress=progress,
        )
        results["task_limit"] = request.limit
    if request.flores:
        results["multilingual"] = multilingual_perplexity(
            model,
            tokenizer,
            request.flores,
            languages=request.languages,
            seq_len=request.seq_len,
            max_windows=request.flores_windows,
            batch_size=request.batch_size,
            device=device,
            progress=progress,
        )
    if request.speed:
        results["speed"] = measure_speed(model, source_dir=loaded.location or None).to_dict()
    return results
