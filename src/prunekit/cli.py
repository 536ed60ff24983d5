"""`prunekit` command line: argument parsing and printing over the Python API (prunekit.api).

Method and recovery flags are generated from the configs' fields, so the two cannot drift. Every
user error ends in one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

from prunekit import api
from prunekit.comparison import check_limit, check_seq_len, comparison_request, comparison_table, evaluate_pruned, write_comparison_report
from prunekit.data.windows import load_windows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.evaluation.perplexity import perplexity
from prunekit.evaluation.suite import evaluate_model
from prunekit.jsonfiles import write_json_atomically
from prunekit.methods import PLAN_FILE, Plan, RecoveryConfig, method_names, method_spec
from prunekit.methods.plan import describe_stage
from prunekit.methods.recipe import recipe_configs
from prunekit.methods.registry import spec_for_config
from prunekit.models.encoders import is_encoder_spec
from prunekit.models.export import check_output_dir, release_all_outputs
from prunekit.models.loading import encoder_loaded, load_model, resolve_device
from prunekit.recovery.distributed import on_main_process
from prunekit.reporting import results_lines, write_report, write_scan
from prunekit.scoring.blocks import METRICS, check_metric, scan_blocks
from prunekit.version import __version__

EXIT_USAGE = 2
RECOVERY = "recovery."  # namespace of the recovery flags' destinations
CONFIGS = [method_spec(name).config_cls for name in method_names() if name != "recover"]


# -- flags generated from the configs ---------------------------------------------------------
def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _value_type(annotation: str):
    def number_or(word):
        def parse(text):
            if text == (word or "none"):
                return word
            try:
                return float(text)
            except ValueError:
                return text  # the config's check names what it takes

        return parse

    if "float" in annotation and "str" in annotation:
        return number_or("auto")
    if annotation == "float | None":
        return number_or(None)
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def add_config_flags(group, config_cls, seen: set[str], prefix: str = "") -> None:
    """One flag per field (dest = prefix + field name); unset flags stay absent, so config defaults apply."""
    for field in dataclasses.fields(config_cls):
        if field.name in seen or "config" in field.metadata or field.name == "recovery":
            continue
        seen.add(field.name)
        flag, kind, common = (
            flag_of(field),
            str(field.type),
            {"dest": prefix + field.name, "default": argparse.SUPPRESS, "help": field.metadata.get("help")},
        )
        if kind == "bool":
            group.add_argument(flag, action="store_const", const=not field.default, **common)
        elif kind.startswith("tuple"):
            group.add_argument(flag, type=int, nargs="*", **common)
        else:
            group.add_argument(flag, type=_value_type(kind), **common)


def config_options(args, config_cls, prefix: str = "") -> dict:
    return {
        f.name: getattr(args, prefix + f.name)
        for f in dataclasses.fields(config_cls)
        if hasattr(args, prefix + f.name) and f.name != "recovery"
    }


def _flags() -> dict[str, str]:
    names = {f.name: flag_of(f) for cls in (*CONFIGS, RecoveryConfig) for f in dataclasses.fields(cls)}
    return {**names, "data": "--data", "method": "--method", "recipe": "--recipe", "eval_limit": "--eval-limit", "limit": "--limit"}


def _cli_message(error: PrunekitError) -> str:
    """Library errors name parameters (ffn_ratio); on the command line they name flags (--ffn-ratio)."""
    if not isinstance(error, ParameterError):
        return str(error)
    flags = _flags()
    detail = re.sub(
        r"`([a-z_]+)`|\b([a-z]+_[a-z_]+)\b", lambda m: flags.get(m.group(1) or m.group(2), m.group(1) or m.group(2)), error.detail
    )
    return f"{flags.get(error.parameter, error.parameter)} {detail}"


def _recovery(args, base: RecoveryConfig | None, when_unset: bool = False) -> RecoveryConfig | None:
    """The method's recovery default with the recovery flags given; --recovery-tokens 0 means none."""
    given = config_options(args, RecoveryConfig, RECOVERY)
    if not given and not when_unset:
        return base
    if given.get("tokens") == 0:
        return None
    return dataclasses.replace(base or RecoveryConfig(), **given, seed=args.seed)


# -- shared options ---------------------------------------------------------------------------
def _add_model_options(parser) -> None:
    parser.add_argument("--model", required=True, help="hub id, local directory, .gguf file, or the alias smollm2-135m")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub (off by default)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--text-field", default="text", help="the text field of .jsonl/.json records and hub rows (default text)")
    parser.add_argument("--seed", type=int, default=0, help="seed for calibration offsets, recovery data and random choices")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward batch")
    parser.add_argument("--offload", action="store_true", help="keep only the current block on the device (large models)")


def _add_calibration_options(parser) -> None:
    parser.add_argument(
        "--data", default="builtin", help="calibration data: builtin, wikitext2, c4, ptb, a hub id or a .txt/.raw/.jsonl/.json file"
    )
    parser.add_argument("--windows", type=int, default=16, help="number of calibration windows (default 16)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window (default 512)")


def _add_output_options(parser, required: bool = True) -> None:
    parser.add_argument("--out", required=required, help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output")


def _add_recovery_flags(parser, seen: set[str]) -> None:
    group = parser.add_argument_group("recovery (distillation from the dense teacher; flags left out keep the method's defaults)")
    group.add_argument(
        "--recovery-data",
        default="self",
        help="self (text sampled from the teacher; default), builtin, wikitext2, c4, a hub id or a local file",
    )
    add_config_flags(group, RecoveryConfig, seen, RECOVERY)


def _load(args, out: bool = True):
    """The model (an encoder or a causal LM), with --out checked before and after the (slow) load."""
    if out:
        check_output_dir(args.out, args.overwrite)
    if is_encoder_spec(args.model):
        loaded = encoder_loaded(args.model)
    else:
        loaded = load_model(
            args.model,
            device=args.device,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            place_on_device=not args.offload,
            progress=not args.quiet,
        )
    if out:
        check_output_dir(args.out, args.overwrite, _protected(args, loaded))
    return loaded


def _protected(args, loaded) -> list[str]:
    return [p for p in (loaded.location, args.model) if p and Path(p).expanduser().exists()]


def _windows(spec: str, loaded, args, purpose: str, count: int | None, seq_len: int, flag: str = "--seq-len"):
    check_seq_len(seq_len, loaded.model, flag)
    return load_windows(
        spec, loaded.tokenizer, purpose=purpose, num_windows=count, text_field=args.text_field, seq_len=seq_len, seed=args.seed
    )


def _print(args, payload: dict, lines: list[str]) -> int:
    print(json.dumps(payload, indent=2) if args.json else "\n".join(lines))
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[c])) for row in rows) for c in range(len(rows[0]))]
    lines = [" | ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# -- commands ---------------------------------------------------------------------------------
def cmd_scan(args) -> int:
    check_metric(args.metric)
    out = Path(args.out).expanduser()
    if out.suffix != ".json":
        raise PrunekitError(f"--out {out} must name a .json file (a .png chart is written beside it)")
    for existing in (out, out.with_suffix(".png")):
        if existing.exists() and not args.overwrite:
            raise PrunekitError(f"{existing} exists; pass --overwrite or choose another --out")
    loaded = _load(args, out=False)
    windows = _windows(args.data, loaded, args, "calibration", args.windows, args.seq_len)
    scores = scan_blocks(
        loaded.model,
        windows,
        args.metric,
        span=args.span,
        device=resolve_device(args.device),
        offload=args.offload,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    payload = write_scan(scores, out, model=args.model)
    return _print(
        args,
        payload,
        [
            f"{args.metric} scores for {len(scores.scores)} {'blocks' if scores.span == 1 else 'spans'} "
            f"({windows.num_tokens} tokens, {scores.seconds:.1f} s); least important first: {scores.ranking()[:10]}",
            f"wrote {out} and {out.with_suffix('.png')}",
        ],
    )


def _stages(args) -> tuple[list | None, Plan | None]:
    """The recipe, the plan or the method of `prune`, checked before the model loads."""
    chosen = [name for name, given in (("--recipe", args.recipe), ("--plan", args.plan)) if given]
    method_options = sorted({f for cls in CONFIGS for f in config_options(args, cls)} - {"seed"})
    if args.recipe or args.plan:
        if len(chosen) > 1 or args.method:
            raise PrunekitError(f"{' and '.join(chosen + (['--method'] if args.method else []))} each decide what is done; give one")
        if method_options:
            raise PrunekitError(f"{chosen[0]} decides what is done; drop {', '.join(_flags()[n] for n in method_options)}")
        return (recipe_configs(args.recipe), None) if args.recipe else (None, Plan.load(args.plan))
    name = args.method or "shortgpt"
    spec = method_spec(name)
    extra = sorted(set(method_options) - {f.name for f in dataclasses.fields(spec.config_cls)})
    if extra:
        raise PrunekitError(
            f"{', '.join(_flags()[n] for n in extra)} {'is' if len(extra) == 1 else 'are'} not an option of --method {name}"
        )
    options = config_options(args, spec.config_cls)
    if name == "iterabre":  # iteration checkpoints beside the output, so an interrupted run can --resume
        options.setdefault("run_dir", f"{Path(args.out).expanduser()}.iterabre-run")
        options.setdefault("overwrite_run", args.overwrite)
    trains = any(f.name == "recovery" for f in dataclasses.fields(spec.config_cls))
    if trains:
        options["recovery"] = _recovery(args, spec.config_cls().recovery)
    config = spec.config_cls(**options)
    config.check()
    recovery = None if trains else _recovery(args, None)
    return [config] + ([recovery] if recovery else []), None


def cmd_prune(args) -> int:
    configs, plan = _stages(args)
    if args.compare and is_encoder_spec(args.model):
        raise PrunekitError("--compare measures causal LMs; evaluate an encoder with benchmarks/encoder_width.py")
    request = (
        comparison_request(
            args.eval_data, args.eval_seq_len, args.eval_windows, _split(args.eval_tasks), args.eval_data_dir, args.eval_limit, args.offload
        )
        if args.compare
        else None
    )
    loaded = _load(args)
    device = resolve_device(args.device)
    encoder = is_encoder_spec(args.model)
    if configs:
        api.check_against(loaded.model, configs)
    needs_data = api.plan_needs_data(plan) if plan is not None else any(method_spec(n).needs_data for n in _names(configs))
    windows = _windows(args.data, loaded, args, "calibration", args.windows, args.seq_len - 2 * encoder) if needs_data else None
    heldout = (
        _windows(args.heldout_data, loaded, args, "evaluation", args.heldout_windows, args.seq_len)
        if args.heldout_windows and "iterabre" in _names(configs)
        else None
    )
    dense = evaluate_model(loaded, request, device=device, progress=not args.quiet, label="dense") if request else None
    result = api.prune(
        loaded.model,
        configs,
        windows,
        plan=plan,
        tokenizer=loaded.tokenizer,
        recovery_data=args.recovery_data,
        heldout=heldout,
        device=device,
        offload=args.offload,
        batch_size=args.batch_size,
        progress=not args.quiet,
        inplace=True,
        seed=args.seed,
        model_name=args.model,
    )
    extra = {}
    if request:
        extra["prunekit_eval.json"] = {
            "dense": dense,
            "pruned": evaluate_pruned(loaded, request, result.plan, device=device, progress=not args.quiet),
        }
    out = Path(args.out).expanduser().resolve()
    on_main_process(
        lambda: api.save(
            result,
            out,
            loaded.tokenizer,
            overwrite=args.overwrite,
            extra_json=extra,
            protected=_protected(args, loaded),
            source=loaded.location,
        )
    )
    lines = [describe_stage(stage) for stage in result.plan.stages]
    if request:
        lines += [
            _table(comparison_table(dense, extra["prunekit_eval.json"]["pruned"])),
            f"report: {write_comparison_report(out, dense, extra['prunekit_eval.json']['pruned'])}",
        ]
    lines += [
        f"parameters: {result.plan.params_before / 1e6:.1f}M -> {result.plan.params_after / 1e6:.1f}M",
        f"pruned checkpoint written to {out} (plan: {out / PLAN_FILE})",
    ]
    return _print(args, {"out": str(out), "plan": result.plan.to_dict(), "evaluation": extra.get("prunekit_eval.json", {})}, lines)


def _names(configs) -> list[str]:

    return [spec_for_config(c).name for c in configs or []]


def cmd_extend(args) -> int:
    args.method, args.recipe, args.plan, args.compare = "extend", None, None, False
    return cmd_prune(args)


def cmd_recover(args) -> int:
    config = _recovery(
        args, RecoveryConfig(kd_weight=1.0 if args.teacher else 0.0, lm_weight=0.0 if args.teacher else 1.0), when_unset=True
    )
    if config is None:
        raise ParameterError("tokens", "0 trains nothing; give a positive budget")
    config.check(has_teacher=args.teacher is not None)
    if args.recovery_data == "self" and args.teacher is None:
        raise PrunekitError("--recovery-data self samples text from the --teacher; give a --teacher or a data SPEC")
    loaded = _load(args)
    protected = _protected(args, loaded)
    teacher = None
    if args.teacher:
        teacher_loaded = load_model(args.teacher, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
        teacher, protected = teacher_loaded.model, protected + _protected(argparse.Namespace(model=args.teacher), teacher_loaded)
        if len(loaded.tokenizer) != len(teacher_loaded.tokenizer):
            raise PrunekitError("the --teacher has another vocabulary than --model; distillation needs the same tokenizer")
    check_output_dir(args.out, args.overwrite, protected)
    check_seq_len(config.seq_len, loaded.model, "--recovery-seq-len")
    device = resolve_device(args.device)
    heldout = (
        _windows(args.heldout_data, loaded, args, "evaluation", args.heldout_windows, config.seq_len, "--recovery-seq-len")
        if args.heldout_windows
        else None
    )

    before = perplexity(loaded.model, heldout, device=device, progress=False).perplexity if heldout else None
    result = api.prune(
        loaded.model,
        config,
        teacher=teacher,
        tokenizer=loaded.tokenizer,
        recovery_data=args.recovery_data,
        device=device,
        progress=not args.quiet,
        inplace=True,
        model_name=args.model,
    )
    after = perplexity(loaded.model, heldout, device=device, progress=False).perplexity if heldout else None
    stage = result.plan.stages[0]
    summary = {
        **stage["details"],
        "model": args.model,
        "teacher": args.teacher,
        "heldout": heldout.summary() if heldout else None,
        "heldout_perplexity_before": before,
        "heldout_perplexity_after": after,
    }
    earlier = Path(loaded.location) / PLAN_FILE if loaded.location else None
    plan = Plan.load(earlier) if earlier is not None and earlier.is_file() else None
    extra = {"prunekit_recovery.json": summary}
    if plan is not None:
        plan.stages.append({**stage, "details": summary})
        plan.params_after = result.plan.params_after
        extra[PLAN_FILE] = plan.to_dict()
    out = Path(args.out).expanduser().resolve()
    on_main_process(lambda: api.save(loaded.model, out, loaded.tokenizer, overwrite=args.overwrite, extra_json=extra, protected=protected))
    lines = [describe_stage({"method": "recover", "details": summary})]
    if heldout:
        lines.append(f"held-out perplexity ({heldout.description}, {heldout.num_windows}x{heldout.seq_len}): {before:.2f} -> {after:.2f}")
    return _print(
        args,
        {"out": str(out), "recovery": summary},
        lines + [f"recovered checkpoint written to {out} (log: {out / 'prunekit_recovery.json'})"],
    )


def cmd_eval(args) -> int:
    check_limit(args.limit)
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and out.is_dir():
        raise PrunekitError(f"--out {out} is a directory; name the .json file to write")
    if out is not None and out.exists() and not args.overwrite:
        raise PrunekitError(f"{out} exists; pass --overwrite or choose another --out")
    if args.data_dir and not Path(args.data_dir).expanduser().is_dir():
        raise PrunekitError(f"--data-dir {args.data_dir} is not a directory")
    if is_encoder_spec(args.model):
        raise PrunekitError(
            "prunekit eval measures causal LMs; for an encoder compare sentence embeddings "
            "(prunekit.models.encoders.sentence_embeddings, benchmarks/encoder_width.py)"
        )
    tasks = _split(args.tasks)
    request = comparison_request("builtin", args.seq_len, args.windows, tasks, args.data_dir, args.limit, args.offload)
    request = dataclasses.replace(
        request,
        ppl=args.ppl or ([] if (tasks or args.flores or args.speed) else ["builtin"]),
        task_batch_size=args.task_batch_size,
        flores=args.flores,
        languages=_split(args.languages) or None,
        flores_windows=args.flores_windows,
        speed=args.speed,
        batch_size=args.batch_size,
    )
    if args.windows is not None and args.windows < 1:
        raise ParameterError("windows", f"{args.windows} must be at least 1")
    loaded = _load(args, out=False)
    check_seq_len(args.seq_len, loaded.model)
    results = evaluate_model(loaded, request, device=resolve_device(args.device), progress=not args.quiet, label=args.label)
    if out is not None:
        write_json_atomically(out, results)
    return _print(args, results, results_lines(args.model, results) + ([f"wrote {out}"] if out else []))


def cmd_report(args) -> int:
    paths = write_report(args.results, args.out, overwrite=args.overwrite, baseline=args.baseline)
    return _print(args, {k: str(v) for k, v in paths.items()}, [f"wrote {paths['markdown']} and {paths['html']}"])


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


# -- parser -----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Argument errors in one line that points to --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"prunekit: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:

    parser = _Parser(prog="prunekit", description="Structured pruning of LLMs.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="score every decoder block; write JSON and a PNG chart")
    _add_model_options(scan)
    _add_calibration_options(scan)
    scan.add_argument("--metric", default="bi", help=f"one of {', '.join(METRICS)} (default bi)")
    scan.add_argument("--span", type=int, default=1, help="blocks per span for --metric angular")
    scan.add_argument("--out", default="prunekit_scan.json", help="JSON output path; the PNG goes beside it")
    scan.add_argument("--overwrite", action="store_true")
    scan.set_defaults(func=cmd_scan)

    prune = sub.add_parser("prune", help="prune by a method, a recipe or a saved plan; write a checkpoint plus prunekit_plan.json")
    _add_model_options(prune)
    _add_calibration_options(prune)
    _add_output_options(prune)
    prune.add_argument("--method", help=f"one of {', '.join(n for n in method_names() if n != 'recover')} (default shortgpt)")
    prune.add_argument("--recipe", help="a .yaml/.json list of stages, e.g. [{method: shortgpt, remove: 4}, {recover: {tokens: 200000}}]")
    prune.add_argument(
        "--plan",
        help="re-apply a prunekit_plan.json (file or checkpoint directory): depth stages as recorded, "
        "others rerun from their saved settings",
    )
    prune.add_argument("--heldout-data", default="builtin", help="iterabre: perplexity data logged after each iteration")
    prune.add_argument("--heldout-windows", type=int, default=4, help="iterabre: held-out windows per check (0 = none; default 4)")
    prune.add_argument("--compare", "--eval", action="store_true", help="evaluate before and after; write DIR/report/")
    prune.add_argument("--eval-data", default="builtin", help="perplexity data for --compare (default: builtin evaluation half)")
    prune.add_argument("--eval-windows", type=int, default=16, help="perplexity windows for --compare (default 16)")
    prune.add_argument("--eval-seq-len", type=int, default=512)
    prune.add_argument("--eval-tasks", help="comma-separated lm-eval tasks for --compare")
    prune.add_argument("--eval-data-dir", help="read --eval-tasks from local files (layout of prunekit's shared data)")
    prune.add_argument("--eval-limit", type=float, help="items per task for --compare")
    seen = {"seed"}
    group = prune.add_argument_group("method options (each applies to the methods whose config has it)")
    for config_cls in CONFIGS:
        add_config_flags(group, config_cls, seen)
    _add_recovery_flags(prune, seen)
    prune.set_defaults(func=cmd_prune)

    evaluate = sub.add_parser("eval", help="perplexity, zero-shot tasks, multilingual perplexity and speed of a model")
    _add_model_options(evaluate)
    evaluate.add_argument("--ppl", nargs="+", help="perplexity data: builtin, wikitext2, c4, ptb or local files (default builtin)")
    evaluate.add_argument("--seq-len", type=int, default=512, help="window length (512 or 2048 are common)")
    evaluate.add_argument("--windows", type=int, help="use only the first N windows (default: all)")
    evaluate.add_argument("--tasks", help="comma-separated lm-eval task names, e.g. piqa,arc_easy,hellaswag")
    evaluate.add_argument("--data-dir", help="read the tasks from local files laid out as in prunekit's shared data")
    evaluate.add_argument("--limit", type=float, help="items per task (a fraction if < 1), for quick runs")
    evaluate.add_argument("--task-batch-size", type=int, default=8)
    evaluate.add_argument("--flores", help="FLORES-200 folder for per-language perplexity")
    evaluate.add_argument("--languages", help="comma-separated FLORES codes (default: all found)")
    evaluate.add_argument("--flores-windows", type=int, help="windows per language (default: all)")
    evaluate.add_argument("--speed", action="store_true", help="prefill/decode tokens/s, peak memory, size")
    evaluate.add_argument("--label", help="name of this model in reports (default: --model)")
    _add_output_options(evaluate, required=False)
    evaluate.set_defaults(func=cmd_eval)

    recover_cmd = sub.add_parser("recover", help="distil a dense teacher into a pruned model on a token budget")
    _add_model_options(recover_cmd)
    _add_output_options(recover_cmd)
    recover_cmd.add_argument("--teacher", help="the dense model to distil from (without one, plain next-token training)")
    recover_cmd.add_argument("--heldout-data", default="builtin", help="perplexity data checked before and after (default builtin)")
    recover_cmd.add_argument("--heldout-windows", type=int, default=4, help="held-out windows (0 = skip; default 4)")
    _add_recovery_flags(recover_cmd, {"seed"})
    recover_cmd.set_defaults(func=cmd_recover)

    extend = sub.add_parser("extend", help="grow a model deeper by repeating blocks with their own adapters (FlexiGPT)")
    _add_model_options(extend)
    _add_output_options(extend)
    seen = {"seed"}
    add_config_flags(extend.add_argument_group("extend options"), method_spec("extend").config_cls, seen)
    _add_recovery_flags(extend, seen)
    extend.set_defaults(func=cmd_extend, data="builtin", windows=0, seq_len=512, heldout_windows=0)

    report = sub.add_parser("report", help="Markdown + HTML report with tables and plots from eval results")
    report.add_argument("results", nargs="+", help="results JSON files written by prunekit eval --out")
    report.add_argument("--out", required=True, help="output directory")
    report.add_argument("--baseline", help="label or file of the dense model for ratios (default: the one with most blocks)")
    report.add_argument("--overwrite", action="store_true")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and `timeout` send) unwinds like Ctrl-C, so temporary output is removed."""


def _terminated(signum, frame):
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    if getattr(args, "quiet", False):
        os.environ["TQDM_DISABLE"] = "1"
    # under torchrun / accelerate launch only the main process reports
    report = contextlib.nullcontext() if int(os.environ.get("RANK", "0")) == 0 else contextlib.redirect_stdout(io.StringIO())
    try:
        if getattr(args, "batch_size", 1) < 1:
            raise PrunekitError(f"--batch-size {args.batch_size} must be at least 1")
        with report:
            return args.func(args)
    except PrunekitError as error:
        print(f"prunekit: error: {_cli_message(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, _Terminated)
        print(f"prunekit: {'terminated' if terminated else 'interrupted'}; no partial output was written", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        release_all_outputs()


if __name__ == "__main__":
    sys.exit(main())
