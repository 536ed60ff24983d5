"""`prunekit prune` (a method, a recipe or a saved plan), and the methods offered as commands of their own (`extend`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prunekit import jobs
from prunekit.commands.common import (
    data_settings,
    drop_default_run_dir,
    load_from_flags,
    local_inputs,
    print_result,
    recovery_from_flags,
    run_directory,
    run_options,
    shown,
)
from prunekit.commands.export import decilm_lines, decilm_payload, gguf_lines, gguf_payload
from prunekit.commands.flags import (
    CALIBRATION_OPTIONS,
    CONFIGS,
    FLAGS,
    HELDOUT_OPTIONS,
    MODEL_OPTIONS,
    OUTPUT_OPTIONS,
    PRUNE_OPTIONS,
    RUN_OPTIONS,
    add_recovery_flags,
    add_tables,
)
from prunekit.comparison import comparison_request, comparison_table, format_table
from prunekit.errors import PrunekitError
from prunekit.export.decilm import export_decilm
from prunekit.export.gguf_writer import check_gguf_output, check_gguf_type, export_gguf
from prunekit.methods import PLAN_FILE, Plan, RecoveryConfig, default_method, describe_stage, method_names, method_spec
from prunekit.methods.recipe import recipe_configs
from prunekit.methods.registry import spec_for_config
from prunekit.models.encoders import is_encoder_spec
from prunekit.models.export import check_output_dir
from prunekit.options import add_config_flags, config_options


def _stages(args) -> tuple[list | None, Plan | None]:
    """The recipe, the plan or the method of `prune`, checked before the model loads."""
    chosen = [flag for flag in ("--recipe", "--plan", "--method") if getattr(args, flag[2:])]
    given = sorted({name for cls in CONFIGS for name in config_options(args, cls)} - {"seed"})
    if not method_spec(args.method or default_method()).own_run_directory or args.recipe or args.plan:
        given = [name for name in given if name not in RUN_OPTIONS]
    if "--recipe" in chosen or "--plan" in chosen:
        if len(chosen) > 1:
            raise PrunekitError(f"{' and '.join(chosen)} each decide what is done; give one")
        if given:
            raise PrunekitError(f"{chosen[0]} decides what is done; drop {', '.join(FLAGS[n] for n in given)}")
        return (recipe_configs(args.recipe), None) if args.recipe else (None, Plan.load(args.plan))
    spec = method_spec(args.method or default_method())
    options = config_options(args, spec.config_cls)
    if not spec.own_run_directory:
        options = {k: v for k, v in options.items() if k not in RUN_OPTIONS}
    if extra := sorted(set(given) - set(options)):
        raise PrunekitError(f"{', '.join(FLAGS[n] for n in extra)}: not an option of --method {spec.name}")
    if spec.own_run_directory:  # e.g. IteRABRe's iterations beside the output, so an interrupted run can --resume
        options = {"run_dir": f"{Path(args.out).expanduser()}.{spec.name}-run", "overwrite_run": args.overwrite, **options}
    trains = any(f.name == "recovery" for f in dataclasses.fields(spec.config_cls))
    if trains:
        options["recovery"] = recovery_from_flags(args, spec.config_cls().recovery)
    config = spec.config_cls(**options)
    config.check()
    recovery = None if trains else recovery_from_flags(args, None)
    return [config] + ([recovery] if recovery else []), None


def cmd_prune(args) -> int:
    configs, plan = _stages(args)
    gguf = gguf_request(args)
    vllm = vllm_request(args)
    if args.compare and is_encoder_spec(args.model):
        raise PrunekitError("--compare measures causal LMs; evaluate an encoder with benchmarks/encoder_width.py")
    compare = None
    if args.compare:
        tasks = jobs.split_list(args.eval_tasks)
        compare = comparison_request(
            args.eval_data, args.eval_seq_len, args.eval_windows, tasks, args.eval_data_dir, args.eval_limit, args.offload
        )
    loaded = load_from_flags(args)
    trains = any(isinstance(c, RecoveryConfig) or getattr(c, "recovery", None) for c in configs or [])
    keeps_its_own = configs and len(configs) == 1 and spec_for_config(configs[0]).own_run_directory
    run = run_directory(args, trains and not keeps_its_own)
    options = dict(configs=configs, plan=plan, data=data_settings(args), compare=compare, offload=args.offload, batch_size=args.batch_size)
    job = jobs.prune_job(loaded, args.out, protected=jobs.input_paths(loaded), run=run, **options, **run_options(args))
    drop_default_run_dir(args, run)
    plan = job.result.plan
    lines = [describe_stage(stage) for stage in plan.stages]
    if args.data is None and not args.plan and any(stage["method"] == "liar" for stage in plan.stages):
        lines.append(
            "note: liar calibrated on the built-in text (Python documentation), the default; calibrating on text like the "
            "model's use is better (SmolLM2 at 20%: WikiText-2 perplexity 66.77 on built-in against 50.58 on C4): pass --data"
        )
    lines += [
        f"left out stage '{name}' of the plan: it trains; run it again with prunekit recover"
        for name in job.result.metrics.get("skipped_stages", [])
    ]
    if job.report:  # its table gives the parameters
        lines += [format_table(comparison_table(job.evaluation["dense"], job.evaluation["pruned"])), f"report: {shown(job.report)}"]
    else:
        lines.append(f"parameters: {plan.params_before / 1e6:.1f}M -> {plan.params_after / 1e6:.1f}M")
    lines.append(f"pruned checkpoint written to {shown(job.out)} (plan: {shown(job.out / PLAN_FILE)})")
    payload = {"out": str(job.out), "plan": plan.to_dict(), "evaluation": job.evaluation}
    if gguf:
        try:
            exported = export_gguf(
                job.result.model, loaded.tokenizer, args.gguf, gguf_type=gguf, overwrite=args.overwrite, protected=jobs.input_paths(loaded)
            )
        except PrunekitError as error:
            raise PrunekitError(f"the checkpoint is in {job.out}, but no GGUF file was written: {error}") from error
        lines += gguf_lines(exported)
        payload["gguf"] = gguf_payload(exported)
    if vllm:
        try:
            decilm = export_decilm(job.result.model, loaded.tokenizer, vllm, overwrite=args.overwrite, protected=jobs.input_paths(loaded))
        except PrunekitError as error:
            raise PrunekitError(f"the checkpoint is in {job.out}, but nothing was written for vLLM: {error}") from error
        lines += decilm_lines(decilm)
        payload["vllm"] = decilm_payload(decilm)
    return print_result(args, payload, lines)


def vllm_request(args) -> Path | None:
    """The --vllm directory, checked before any work (not the checkpoint's own --out, not over an input); None without it."""
    if not getattr(args, "vllm", None):
        return None
    if is_encoder_spec(args.model):
        raise PrunekitError(f"--vllm writes decoder language models; {args.model} is an encoder")
    out = Path(args.vllm).expanduser().resolve()
    if out == Path(args.out).expanduser().resolve():
        raise PrunekitError("--vllm names the same directory as --out; give the vLLM checkpoint a directory of its own")
    check_output_dir(out, args.overwrite, local_inputs(args.model) + [args.out])
    return out


def gguf_request(args) -> str | None:
    """The --gguf type, checked with its output before any work; None without --gguf."""
    if not getattr(args, "gguf", None):
        return None
    gguf_type = check_gguf_type(args.gguf_type)
    check_gguf_output(args.gguf, args.overwrite, local_inputs(args.model))
    return gguf_type


def cmd_method(args) -> int:
    """A method offered as a command of its own (e.g. growing a model deeper): a prune with that method alone."""
    args.method, args.recipe, args.plan, args.compare = args.command, None, None, False  # prune's evaluation flags stay unread
    return cmd_prune(args)


def register(sub) -> None:
    prune = sub.add_parser("prune", help="prune by a method, a recipe or a saved plan; write a checkpoint plus prunekit_plan.json")
    add_tables(prune, MODEL_OPTIONS, CALIBRATION_OPTIONS, OUTPUT_OPTIONS, PRUNE_OPTIONS, HELDOUT_OPTIONS)
    seen = {"seed"}
    for config_cls in CONFIGS:
        add_config_flags(prune.add_argument_group(f"{config_cls.__name__} options"), config_cls, seen, others=tuple(CONFIGS))
    add_recovery_flags(prune)
    sub.choices["prune"].set_defaults(func=cmd_prune)


def register_methods(sub) -> None:
    for spec in map(method_spec, method_names()):
        if not spec.command_help:
            continue
        command = sub.add_parser(spec.name, help=spec.command_help)
        add_tables(command, MODEL_OPTIONS, OUTPUT_OPTIONS)
        add_config_flags(command.add_argument_group(f"{spec.name} options"), spec.config_cls, {"seed"})
        add_recovery_flags(command, run_flags=True)
        command.set_defaults(data="builtin", windows=0, seq_len=512, heldout_windows=0, func=cmd_method)
