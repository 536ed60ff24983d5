"""Whole jobs as the command line runs them, callable from Python too: load the data a job needs,
evaluate the dense model, prune (or recover), evaluate again, save the checkpoint with its plan and
report. The CLI only parses flags and prints what these return."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from prunekit import api
from prunekit.comparison import check_seq_len, comparison_request, evaluate_pruned, write_comparison_report
from prunekit.data.windows import TokenWindows, load_windows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.evaluation.speed import disk_size
from prunekit.evaluation.suite import EvaluationRequest, evaluate_model
from prunekit.jsonfiles import write_json_atomically
from prunekit.methods import PLAN_FILE, Plan, RecoveryConfig, method_spec
from prunekit.methods.registry import default_calibration_windows, spec_for_config, stage_windows
from prunekit.models.encoders import is_encoder_config, is_encoder_spec
from prunekit.models.export import check_not_over_inputs, check_output_dir, check_output_file, claim_output
from prunekit.models.loading import LoadedModel, encoder_loaded, load_model
from prunekit.recovery.distributed import on_main_process
from prunekit.recovery.failed_runs import run_directories
from prunekit.reporting import write_scan
from prunekit.scoring.blocks import BlockScores, check_metric, scan_blocks


@dataclass
class DataSettings:
    """Where calibration and held-out windows come from."""

    data: str | None = None  # None: builtin, or when re-applying a plan, the data the plan recorded
    windows: int | None = None  # None: the most any stage's method asks for (16 for block scores, 64 for LIAR)
    seq_len: int = 512
    heldout_data: str = "builtin"
    heldout_windows: int = 0
    recovery_data: str = "self"
    text_field: str = "text"
    seed: int = 0

    def load(
        self, loaded: LoadedModel, spec: str, purpose: str, count: int | None, seq_len: int, parameter: str = "window_seq_len"
    ) -> TokenWindows:
        check_seq_len(seq_len, loaded.model, parameter)
        return load_windows(
            spec, loaded.tokenizer, purpose=purpose, num_windows=count, text_field=self.text_field, seq_len=seq_len, seed=self.seed
        )


@dataclass
class JobResult:
    result: api.PruneResult
    out: Path
    evaluation: dict = field(default_factory=dict)
    report: Path | None = None


def prune_job(
    loaded: LoadedModel,
    out: str | Path,
    *,
    configs: list | None = None,
    plan: Plan | None = None,
    data: DataSettings | None = None,
    compare: EvaluationRequest | None = None,
    device=None,
    offload: bool = False,
    batch_size: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    protected: list = (),
    run: dict | None = None,
) -> JobResult:
    """Prune `loaded` in place by `configs` (a recipe) or a saved `plan` and save it to `out`; with
    `compare`, evaluate before and after and write out/report/."""
    data = data or DataSettings()
    if configs:
        api.check_against(loaded.model, configs)
        for config in configs:  # a recovery stage, or a method that trains (IteRABRe, FlexiGPT, extend)
            recovery = config if isinstance(config, RecoveryConfig) else getattr(config, "recovery", None)
            if isinstance(recovery, RecoveryConfig):
                check_seq_len(recovery.seq_len, loaded.model, "seq_len")
    names = [spec_for_config(c).name for c in configs or []]
    needs_data = api.plan_needs_data(plan) if plan is not None else any(method_spec(n).needs_data for n in names)
    encoder = is_encoder_config(loaded.model.config)  # an encoder's windows get [CLS] and [SEP] added
    if data.windows is not None:  # every stage gets these unless it names its own count
        count = max([data.windows, *stage_windows(configs)])
    else:
        count = default_calibration_windows(names or [s["method"] for s in plan.stages], configs)
    if needs_data and count < 1:
        raise ParameterError("windows", f"{count} must be at least 1 (calibration windows)")
    replaying = plan is not None and data.data is None  # its LIAR stages rerun on the data the plan recorded
    if needs_data and replaying:
        windows = api.plan_calibration(plan, loaded.tokenizer)
    elif needs_data:
        windows = data.load(loaded, data.data or "builtin", "calibration", count, data.seq_len - 2 * encoder)
    else:
        windows = None
    heldout = (
        data.load(loaded, data.heldout_data, "evaluation", data.heldout_windows, data.seq_len)
        if data.heldout_windows and any(method_spec(name).logs_heldout for name in names)
        else None
    )
    if compare:
        check_seq_len(compare.seq_len, loaded.model, "eval_seq_len")
    run_dirs, resume = _run_directories(configs, run, out, protected)
    dense = evaluate_model(loaded, compare, device=device, progress=progress, label="dense") if compare else None
    with run_directories(run_dirs, resume):
        result = api.prune(
            loaded.model,
            configs,
            windows,
            plan=plan,
            tokenizer=loaded.tokenizer,
            recovery_data=data.recovery_data,
            text_field=data.text_field,
            heldout=heldout,
            device=device,
            offload=offload,
            batch_size=batch_size,
            progress=progress,
            inplace=True,
            seed=data.seed,
            model_name=loaded.source,
            windows_per_stage=data.windows is None and not replaying,
            **(run or {}),
        )
    evaluation = {}
    if compare:
        evaluation = {"dense": dense, "pruned": evaluate_pruned(loaded, compare, result.plan, device=device, progress=progress)}
    out = Path(out).expanduser().resolve()
    on_main_process(lambda: api.save(result, out, loaded.tokenizer, overwrite=overwrite, protected=protected, source=loaded.location))
    if evaluation:  # written once the checkpoint is, so that its size on disk is the output's own, not the input's
        if evaluation["pruned"].get("speed"):
            evaluation["pruned"]["speed"]["disk_bytes"] = disk_size(out)
        on_main_process(lambda: write_json_atomically(out / "prunekit_eval.json", evaluation))
    report = write_comparison_report(out, evaluation["dense"], evaluation["pruned"]) if evaluation else None
    return JobResult(result, out, evaluation, report)


def _run_directories(configs: list | None, run: dict | None, out, protected: list) -> tuple[list[Path], bool]:
    """The run directories a job trains into (the job's own, and a method's own such as IteRABRe's) and whether it
    resumes; each is checked to lie clear of the inputs and of the output, which replacing would remove."""
    chosen = [(run["run_dir"], run.get("resume", False))] if run else []
    chosen += [(c.run_dir, c.resume) for c in configs or [] if getattr(c, "run_dir", None)]
    out_path = Path(out).expanduser().resolve()
    for path, _ in chosen:
        path = check_not_over_inputs(path, protected)
        if path == out_path or out_path in path.parents or path in out_path.parents:
            raise PrunekitError(f"run directory {path} lies on or in the output {out_path}; choose a `run_dir` beside it")
    return [Path(p) for p, _ in chosen], any(resume for _, resume in chosen)


def recover_job(
    loaded: LoadedModel,
    out: str | Path,
    config: RecoveryConfig,
    *,
    teacher: LoadedModel | None = None,
    data: DataSettings | None = None,
    device=None,
    progress: bool = True,
    overwrite: bool = False,
    protected: list = (),
    run: dict | None = None,
) -> JobResult:
    """Distil `teacher` into `loaded` (next-token training without one) and save it to `out`, with the
    recovery log and, where the input carried a plan, that plan followed by the recovery stage."""
    data = data or DataSettings()
    check_recovery_request(config, teacher is not None, data.recovery_data)
    if teacher is not None and len(loaded.tokenizer) != len(teacher.tokenizer):
        raise PrunekitError("the --teacher has another vocabulary than --model; distillation needs the same tokenizer")
    check_seq_len(config.seq_len, loaded.model, "seq_len")
    heldout = data.load(loaded, data.heldout_data, "evaluation", data.heldout_windows, config.seq_len) if data.heldout_windows else None
    run_dirs, resume = _run_directories(None, run, out, protected)
    with run_directories(run_dirs, resume):
        result = api.prune(
            loaded.model,
            config,
            teacher=teacher.model if teacher else None,
            tokenizer=loaded.tokenizer,
            recovery_data=data.recovery_data,
            text_field=data.text_field,
            heldout=heldout,
            device=device,
            progress=progress,
            inplace=True,
            model_name=loaded.source,
            **(run or {}),
        )
    summary = {**result.plan.stages[0]["details"], **result.metrics, "model": loaded.source, "teacher": teacher.source if teacher else None}
    extra = {"prunekit_recovery.json": summary}
    earlier = Path(loaded.location) / PLAN_FILE if loaded.location else None
    if earlier is not None and earlier.is_file():
        extra[PLAN_FILE] = Plan.load(earlier).followed_by(result.plan).to_dict()
    out = Path(out).expanduser().resolve()
    on_main_process(lambda: api.save(loaded.model, out, loaded.tokenizer, overwrite=overwrite, extra_json=extra, protected=protected))
    return JobResult(result, out, {"recovery": summary})


def load_checked(
    spec: str,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    device="auto",
    dtype="auto",
    trust_remote_code: bool = False,
    offload: bool = False,
    progress: bool = True,
) -> LoadedModel:
    """The model `spec` names (an encoder or a causal LM); an `out` that cannot or must not be written is
    refused before the (slow) load, and again afterwards against the paths the model was read from."""
    if out is not None:
        check_output_dir(out, overwrite)
    if is_encoder_spec(spec):
        loaded = encoder_loaded(spec)
    else:
        loaded = load_model(
            spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code, place_on_device=not offload, progress=progress
        )
    if out is not None:
        check_output_dir(out, overwrite, input_paths(loaded))
    return loaded


def input_paths(loaded: LoadedModel) -> list[str]:
    """The paths a model was read from: an output there would overwrite it."""
    return [p for p in (loaded.location, loaded.source) if p and Path(p).expanduser().exists()]


def scan_job(
    loaded: LoadedModel,
    out: str | Path,
    metric: str,
    *,
    span: int = 1,
    data: DataSettings | None = None,
    device=None,
    offload: bool = False,
    batch_size: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[BlockScores, dict]:
    """Score every block (or span) and write the scores as JSON with a PNG chart beside it."""
    check_metric(metric)
    out = Path(out).expanduser()
    if out.suffix != ".json":
        raise PrunekitError(f"--out {out} must name a .json file (a .png chart is written beside it)")
    for written in (out, out.with_suffix(".png")):
        check_not_over_inputs(written, input_paths(loaded))
        if written.exists() and not overwrite:
            raise PrunekitError(f"{written} exists; pass --overwrite or choose another --out")
    claim_output(out.resolve())
    data = data or DataSettings()
    windows = data.load(loaded, data.data or "builtin", "calibration", data.windows, data.seq_len)  # None: load_windows' default
    scores = scan_blocks(loaded.model, windows, metric, span=span, device=device, offload=offload, batch_size=batch_size, progress=progress)
    return scores, write_scan(scores, out, model=loaded.source)


def eval_job(
    loaded: LoadedModel,
    request: EvaluationRequest,
    *,
    out: str | Path | None = None,
    device=None,
    progress: bool = True,
    label: str | None = None,
) -> dict:
    """Every measurement `request` asks for; written to `out` (JSON for `prunekit report`) when given."""
    if is_encoder_config(loaded.model.config):
        raise PrunekitError(
            "prunekit eval measures causal LMs; for an encoder compare sentence embeddings "
            "(prunekit.models.encoders.sentence_embeddings, benchmarks/encoder_width.py)"
        )
    check_seq_len(request.seq_len, loaded.model, "window_seq_len")
    results = evaluate_model(loaded, request, device=device, progress=progress, label=label)
    if out is not None:
        write_json_atomically(out, results)
    return results


def check_results_path(out: str | Path | None, overwrite: bool, protected: list = ()) -> None:
    if out is None:
        return
    path = check_output_file(out, overwrite, kind="results", example="results.json", protected=protected)
    claim_output(path)  # a second run stops here


def evaluation_request(
    *,
    ppl: list[str] | None = None,
    seq_len: int = 512,
    windows: int | None = None,
    tasks: str | None = None,
    data_dir: str | None = None,
    limit: float | None = None,
    task_batch_size: int = 8,
    flores: str | None = None,
    languages: str | None = None,
    flores_windows: int | None = None,
    speed: bool = False,
    batch_size: int = 1,
    offload: bool = False,
    text_field: str = "text",
) -> EvaluationRequest:
    """A checked request from `prunekit eval`'s options (tasks and languages comma-separated); builtin
    perplexity when nothing else is asked for."""
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise ParameterError("data_dir", f"{data_dir} is not a directory")
    if windows is not None and windows < 1:
        raise ParameterError("windows", f"{windows} must be at least 1")
    task_names = split_list(tasks)
    request = comparison_request("builtin", seq_len, windows, task_names, data_dir, limit, offload)
    return replace(
        request,
        ppl=ppl or ([] if (task_names or flores or speed) else ["builtin"]),
        task_batch_size=task_batch_size,
        flores=flores,
        languages=split_list(languages) or None,
        flores_windows=flores_windows,
        text_field=text_field,
        speed=speed,
        batch_size=batch_size,
    )


def split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def check_recovery_request(config: RecoveryConfig | None, has_teacher: bool, recovery_data: str) -> RecoveryConfig:
    """What `prunekit recover` can refuse before loading anything."""
    if config is None:
        raise ParameterError("tokens", "0 trains nothing; give a positive budget")
    config.check(has_teacher=has_teacher)
    if recovery_data == "self" and not has_teacher:
        raise PrunekitError("--recovery-data self samples text from the --teacher; give a --teacher or a data SPEC")
    return config
