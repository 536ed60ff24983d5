"""The Python entry points: `prune` runs any registered method or recipe, `save` writes the result.

    result = prunekit.prune(model, "liar", windows, ratio=0.3)
    result = prunekit.prune(model, [ShortGPTConfig(remove=4), LiarConfig(ratio=0.2), RecoveryConfig(tokens=200_000)],
                            windows, tokenizer=tokenizer)
    prunekit.save(result, "out/pruned", tokenizer)

The CLI is a thin layer over these calls.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prunekit.data.windows import TokenWindows, load_windows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.evaluation.perplexity import perplexity
from prunekit.methods.depth import blocks_to_remove
from prunekit.methods.plan import PLAN_FILE, Plan, PrunePlan
from prunekit.methods.recipe import recipe_configs
from prunekit.methods.registry import (
    StageContext,
    check_known_settings,
    config_from_options,
    config_to_dict,
    default_calibration_windows,
    method_spec,
    spec_for_config,
)
from prunekit.models.adapters import parameter_count
from prunekit.models.encoders import adapter_for, is_encoder_config, save_encoder
from prunekit.models.export import save_model, with_loaded_from
from prunekit.models.loading import load_model
from prunekit.models.shared_checkpoint import has_shared_blocks, save_shared_model
from prunekit.recovery import dense_teacher
from prunekit.recovery.checkpoints import Checkpointing
from prunekit.recovery.config import RecoveryConfig

__all__ = ["PruneResult", "blocks_to_remove", "prune", "save"]

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    """The pruned model, the plan of what was done, and what was measured on the way."""

    model: object
    plan: Plan
    metrics: dict = field(default_factory=dict)

    def __iter__(self):
        """`model, plan = prunekit.prune(...)` unpacks like a pair."""
        return iter((self.model, self.plan))


def _num_blocks(model) -> int:
    return adapter_for(model).num_blocks


def _own_recovery_default(config) -> RecoveryConfig:
    """The recovery a training method runs when none is given (FlexiGPT: its adapters at their own rates);
    the CLI reads the same default, `type(config)().recovery`."""
    return config.recovery or type(config)().recovery or RecoveryConfig()


def _recovery_fields(recovery) -> dict:
    if isinstance(recovery, int) and not isinstance(recovery, bool):
        return {"tokens": recovery}
    if not isinstance(recovery, dict):
        raise ParameterError("recovery", f"must be a RecoveryConfig, a token count or a dict of its fields, not {type(recovery).__name__}")
    check_known_settings(RecoveryConfig, recovery, "recovery (prunekit.RecoveryConfig)")
    return recovery


def _configs(method, options: dict, recovery) -> list:
    """The stages asked for: a name with options, a config, or a list of them (a recipe)."""
    recipe = isinstance(method, (list, tuple)) or (isinstance(method, (str, Path)) and Path(method).suffix in (".yaml", ".yml", ".json"))
    if recipe:
        if options:
            raise ParameterError(sorted(options)[0], "cannot go with a recipe; put the option into its stage")
        configs = recipe_configs(method)
    elif isinstance(method, str):
        configs = [config_from_options(method, options)]
    elif dataclasses.is_dataclass(method):
        if options:
            method = dataclasses.replace(method, **options)
        spec_for_config(method)
        configs = [method]
    else:
        raise ParameterError("method", f"must be a method name, a config or a list of them, not {type(method).__name__}")
    if recovery is not None:
        configs = _with_recovery(
            configs,
            recovery,
            is_recovery=isinstance(method, str) and not recipe and isinstance(configs[-1], RecoveryConfig),
            options=options,
        )
    for config in configs:
        config.check()
    return configs


def _with_recovery(configs: list, recovery, is_recovery: bool, options: dict) -> list:
    """`recovery` applied to the stages: the training of a method that trains itself (iterabre, flexigpt,
    extend), the settings of the one recovery when the method is `recover`, else a final recovery stage."""
    last = configs[-1]
    trains = any(f.name == "recovery" for f in dataclasses.fields(last))
    if recovery == 0 and not isinstance(recovery, (bool, RecoveryConfig, dict)):  # as --recovery-tokens 0: no training
        if is_recovery:
            raise ParameterError("recovery", "0 leaves method 'recover' nothing to do; give a token count or a RecoveryConfig")
        recovery = None
    elif isinstance(recovery, RecoveryConfig):
        if is_recovery and options:
            raise ParameterError("recovery", f"and the options ({', '.join(sorted(options))}) both set the recovery; give one of them")
    else:  # a token count or some fields: over the method's own defaults
        base = last if is_recovery else _own_recovery_default(last) if trains else RecoveryConfig()
        recovery = dataclasses.replace(base, **_recovery_fields(recovery))
    if is_recovery:
        return [*configs[:-1], recovery]
    if trains:
        return [*configs[:-1], dataclasses.replace(last, recovery=recovery)]
    return configs + ([recovery] if recovery is not None else [])


def plan_needs_data(plan: Plan) -> bool:
    """Whether re-applying `plan` reruns a stage on calibration data."""
    specs = [method_spec(s["method"]) for s in plan.stages if not method_spec(s["method"]).skipped_on_replay]
    return all(s.reapply or s.rerun_from_plan for s in specs) and any(s.reapply is None and s.needs_data for s in specs)


def check_against(model, configs) -> None:
    """The checks of the first stage that need the model (how many blocks it has), before any data loads."""
    first = configs[0] if configs else None
    if first is not None and hasattr(first, "count") and hasattr(first, "protected"):
        num_blocks = _num_blocks(model)
        first.count(num_blocks)
        first.protected(num_blocks)


def _removed_original(alive: list[int], removed_now: list[int]) -> tuple[list[int], list[int]]:
    gone = set(removed_now)
    return [b for i, b in enumerate(alive) if i in gone], [b for i, b in enumerate(alive) if i not in gone]


def prune(
    model,
    method=None,
    data=None,
    *,
    recovery=None,
    teacher=None,
    tokenizer=None,
    recovery_data="self",
    text_field: str = "text",
    plan: Plan | PrunePlan | None = None,
    heldout=None,
    device=None,
    offload: bool = False,
    batch_size: int = 1,
    progress: bool = True,
    inplace: bool = False,
    seed: int = 0,
    model_name: str = "",
    run_dir=None,
    resume: bool = False,
    save_every: int | None = None,
    overwrite_run: bool = False,
    windows_per_stage: bool | None = None,
    **options,
) -> PruneResult:
    """Prune `model` by a registered method, a config, a recipe (list of stages or a file), or a saved `plan`.

    `data`: calibration windows (`prunekit.load_windows`) or a data SPEC; `recovery`: a RecoveryConfig (or a token count)
    for a method that trains, the settings of method "recover", or a final recovery stage (0: no training at all);
    `teacher`: the dense model to distil from (default: the input model, kept unchanged unless `inplace=True`);
    `tokenizer` and `recovery_data` (a SPEC, "self" for text sampled from the teacher, or TokenWindows; `text_field`
    of JSON records) make recovery windows.
    `heldout`: windows whose perplexity is measured before and after (IteRABRe also logs it every iteration).
    A `plan`'s depth stages are re-applied without data, LIAR stages rerun from their saved config (on `data`, or the
    data the plan records), recovery stages are left out (`metrics["skipped_stages"]`); stages whose structure came
    from training (iterabre, flexigpt, extend) are refused. `windows_per_stage`: each stage takes the first windows its
    method asks for by default (16 for block scores, 64 for LIAR); default on for a SPEC, off for TokenWindows.
    `run_dir`: training stages save checkpoints there (`stage-N/`, every `save_every` tokens, by default about every
    ten minutes) and `resume=True` continues an interrupted job.
    """
    model, tokenizer, model_name = _model_of(model, tokenizer, device, model_name)
    plan, configs = _what_to_do(method, options, recovery, plan)
    if heldout is not None and not isinstance(heldout, TokenWindows):
        raise ParameterError("heldout", f"must be TokenWindows (prunekit.load_windows), not {type(heldout).__name__}")
    data_spec, data = data, _calibration(data, plan, configs, tokenizer, seed, text_field)
    target = model if inplace else copy.deepcopy(model)
    context = StageContext(
        windows=data,
        windows_per_stage=isinstance(data_spec, (str, os.PathLike)) if windows_per_stage is None else windows_per_stage,
        tokenizer=tokenizer,
        teacher_factory=_teacher_factory(model, teacher, inplace, configs),
        recovery_data=recovery_data,
        text_field=text_field,
        heldout=heldout,
        device=device,
        offload=offload,
        batch_size=batch_size,
        progress=progress,
        seed=seed,
        checkpoints=None if run_dir is None else Checkpointing(run_dir, save_every, resume, overwrite_run),
    )
    num_blocks = _num_blocks(target)
    if plan is not None:
        plan.check_model(num_blocks)
    params_before = parameter_count(target)
    metrics = {}
    if heldout is not None:
        metrics["heldout_perplexity_before"] = perplexity(target, heldout, device=device, progress=False).perplexity
    stages, removed = _run_stages(target, _stages_to_run(plan, configs, metrics), context, data, num_blocks)
    calibration = data.summary() if hasattr(data, "summary") else None
    sizes = {"num_blocks_before": num_blocks, "num_blocks_after": _num_blocks(target), "params_before": params_before}
    sizes["params_after"] = parameter_count(target)
    result_plan = Plan(stages, removed_blocks=sorted(removed), model=model_name, calibration=calibration, **sizes)
    if heldout is not None:
        metrics["heldout_perplexity_after"] = perplexity(target, heldout, device=device, progress=False).perplexity
        metrics["heldout"] = heldout.summary()
    return PruneResult(target, result_plan, metrics)


def _calibration(data, plan: Plan | None, configs, tokenizer, seed: int, text_field: str):
    """The calibration windows: `data` as windows, or for a plan without data the windows it records, where it needs them."""
    names = [stage["method"] for stage in plan.stages] if plan is not None else [spec_for_config(c).name for c in configs]
    data = _windows_of(data, tokenizer, names, seed, text_field, configs)
    if data is None and plan is not None and tokenizer is not None and plan_needs_data(plan):
        data = plan_calibration(plan, tokenizer)
    return data


def _stages_to_run(plan: Plan | None, configs, metrics: dict) -> list[tuple[str | None, object]]:
    """(recorded method, stage record) for a plan's stages (recovery stages left out and listed in `metrics`),
    or (None, config) for each config to run."""
    if plan is None:
        return [(None, c) for c in configs]
    metrics["skipped_stages"] = [stage["method"] for stage in plan.stages if method_spec(stage["method"]).skipped_on_replay]
    return [(stage["method"], stage) for stage in plan.stages if not method_spec(stage["method"]).skipped_on_replay]


def _what_to_do(method, options: dict, recovery, plan) -> tuple[Plan | None, list | None]:
    """(the plan to re-apply, None) or (None, the configs of the stages to run)."""
    if plan is not None:
        if method is not None or options:
            raise ParameterError("plan", "decides what is done; leave out method and its options")
        plan = plan if isinstance(plan, Plan) else Plan.from_depth_plan(plan)
        for stage in plan.stages:
            spec = method_spec(stage["method"])
            if spec.reapply is None and not spec.rerun_from_plan and not spec.skipped_on_replay:
                raise PrunekitError(f"plan stage '{spec.name}' cannot be re-applied: {spec.why_not_reapplicable}")
        return plan, None
    if method is None:
        raise ParameterError("method", "is missing: name a method (e.g. 'shortgpt'), pass a config, a recipe or a plan")
    return None, _configs(method, options, recovery)


def _teacher_factory(model, teacher, inplace: bool, configs):
    """What a stage that distils gets as its teacher: the one given, else the unpruned model (copied only when needed)."""
    if teacher is not None:
        return lambda: teacher
    if not inplace:
        return lambda: dense_teacher(model)
    original = _snapshot_if_needed(model, configs)
    return (lambda: original) if original is not None else None


def _run_stages(target, steps: list, context: StageContext, data, num_blocks: int) -> tuple[list[dict], list[int]]:
    """Run (or re-apply) each stage on `target`; returns the plan's stage records and the original blocks removed."""
    alive, removed, stages = list(range(num_blocks)), [], []
    for stage_number, (recorded_method, item) in enumerate(steps, 1):
        started = time.perf_counter()
        context.stage = stage_number
        if recorded_method is not None:
            spec, details, config = _replay_stage(target, recorded_method, item, context, data)
        else:
            spec = spec_for_config(item)
            details, config = spec.run(target, item, context), config_to_dict(item)
        if spec.removes_blocks:
            gone, alive = _removed_original(alive, details["removed_blocks"])
            removed += gone
        stages.append(
            {
                "method": spec.name,
                "config": config,
                "details": details,
                "reapplicable": spec.reapply is not None,
                "seconds": time.perf_counter() - started + _seconds_before_resume(details),
            }
        )
    return stages, removed


def _seconds_before_resume(details: dict) -> float:
    """What processes stopped before this one spent on a resumed stage (IteRABRe's iterations, a recovery's steps,
    the adapters' training of flexigpt and extend), so a stage's time is its whole, as its own record counts it."""
    recovery = details.get("recovery")
    nested = recovery.get("seconds_before_resume", 0.0) if isinstance(recovery, dict) else 0.0
    return float(details.get("seconds_before_resume", nested) or 0.0)


def _replay_stage(target, method: str, stage: dict, context: StageContext, data):
    """One stage of a saved plan: re-applied from its details, or run again from its saved config on `data`."""
    spec = method_spec(method)
    if spec.reapply is not None and stage.get("details"):
        spec.reapply(target, stage["details"])
        return spec, stage["details"], stage.get("config", {})
    if spec.reapply is not None:
        raise PrunekitError(
            f"plan stage '{method}' has no details to re-apply (its removed blocks); pass a prunekit_plan.json written by prunekit prune"
        )
    if not spec.rerun_from_plan:
        raise PrunekitError(f"plan stage '{method}' cannot be re-applied: {spec.why_not_reapplicable}")
    if spec.needs_data and data is None:
        raise PrunekitError(
            f"plan stage '{method}' cannot be re-applied without data ({spec.why_not_reapplicable}); "
            "pass calibration data to run it again from its saved config"
        )
    config = config_from_options(method, stage.get("config") or {})
    config.check()
    return spec, spec.run(target, config, context), config_to_dict(config)


def _model_of(model, tokenizer, device, model_name: str):
    """A model object as it is; a checkpoint directory, .gguf file, hub id or alias loaded (with its tokenizer)."""
    if isinstance(model, (str, os.PathLike)):
        loaded = load_model(os.fspath(model), device=device or "auto", progress=False)
        return loaded.model, tokenizer or loaded.tokenizer, model_name or os.fspath(model)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ParameterError("model", f"must be a transformers model, a checkpoint directory or a hub id, not {type(model).__name__}")
    return model, tokenizer, model_name


def plan_calibration(plan: Plan, tokenizer) -> TokenWindows:
    """The calibration windows a plan's data-driven stage (LIAR) was computed on, made again from what the plan
    recorded, so re-applying it keeps the same channels; a plan that does not record where they came from is refused."""
    recorded = plan.calibration or {}
    rerun = ", ".join(sorted({s["method"] for s in plan.stages if method_spec(s["method"]).rerun_from_plan}))
    if not isinstance(recorded.get("spec"), str):
        described = recorded.get("data") or "calibration data the plan does not record"
        raise PrunekitError(
            f"the plan's {rerun} stage was computed on {described}; pass that data (`data`, `windows`, `window_seq_len`) to run it again"
        )
    windows = load_windows(
        recorded["spec"],
        tokenizer,
        purpose="calibration",
        num_windows=recorded.get("windows"),
        seq_len=recorded.get("seq_len", 512),
        seed=recorded.get("seed", 0),
        text_field=recorded.get("text_field", "text"),
    )
    content = recorded.get("content")
    if content is not None and windows.summary(origin=False)["content"] != content:
        raise PrunekitError(
            f"the plan's {rerun} stage was computed on {recorded['data']}, which has changed since (its windows differ from the "
            "ones the plan recorded), so it would keep other channels; restore that data, or prune anew with `data`"
        )
    checked = "the same windows, checked" if content is not None else "not checked: the plan records no content hash"
    log.warning(
        "re-running the plan's %s stage on the data it recorded: %s, %s windows of %s tokens, seed %s (%s)",
        rerun,
        recorded["data"],
        recorded.get("windows"),
        recorded.get("seq_len"),
        recorded.get("seed", 0),
        checked,
    )
    return windows


def _windows_of(data, tokenizer, names: list[str], seed: int, text_field: str = "text", configs: list | None = None):
    """Calibration windows as given; a data SPEC (file, hub name, builtin) made into the windows the methods ask for."""
    if data is None or isinstance(data, TokenWindows):
        return data
    if isinstance(data, (str, os.PathLike)):
        if tokenizer is None:
            raise ParameterError("data", f"is text ('{os.fspath(data)}'): pass tokenizer= to cut it into windows, or pass TokenWindows")
        count = default_calibration_windows(names, configs)
        return load_windows(
            os.fspath(data), tokenizer, purpose="calibration", num_windows=count, seq_len=512, seed=seed, text_field=text_field
        )
    raise ParameterError(
        "data", f"must be TokenWindows (prunekit.load_windows) or a data SPEC such as 'builtin', not {type(data).__name__}"
    )


def _snapshot_if_needed(model, configs):
    """With inplace=True the dense model is gone once a stage runs: copy it first if any stage distils."""

    def trains(config) -> bool:
        recovery = config if isinstance(config, RecoveryConfig) else getattr(config, "recovery", None)
        return recovery is not None

    return dense_teacher(model) if configs and any(trains(c) for c in configs) else None


def save(
    result,
    out: str | os.PathLike,
    tokenizer=None,
    *,
    overwrite: bool = False,
    extra_json: dict | None = None,
    protected: list = (),
    source: str | os.PathLike | None = None,
) -> Path:
    """Write a PruneResult (with its plan) or a model to `out`, in the format its structure needs:
    a plain transformers checkpoint, one with per-layer widths, a shared-block checkpoint, or an
    encoder. Atomic: `out` appears complete or not at all."""
    model, plan = (result.model, result.plan) if isinstance(result, PruneResult) else (result, None)
    protected = with_loaded_from(model, protected)  # never written over, into or above
    extra = dict(extra_json or {})
    if plan is not None:
        extra.setdefault(PLAN_FILE, plan.to_dict())
    if is_encoder_config(model.config):
        return save_encoder(model, tokenizer, out, source=source, extra_json=extra, overwrite=overwrite)
    if has_shared_blocks(model):
        return save_shared_model(model, tokenizer, out, overwrite=overwrite, extra_json=extra, protected=protected)
    return save_model(model, tokenizer, out, overwrite=overwrite, extra_json=extra, protected=protected)
