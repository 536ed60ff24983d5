"""`prunekit` command line: argument parsing and printing over the Python API (prunekit.api).

Method and recovery flags are generated from the configs' fields (prunekit.options), so the two cannot
drift. Every user error ends in one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import io
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path

from transformers.utils import logging as hf_logging

from prunekit import jobs
from prunekit.comparison import check_limit, comparison_request, comparison_table, format_table
from prunekit.data.windows import DEFAULT_CALIBRATION_WINDOWS
from prunekit.errors import ComputationError, PrunekitError
from prunekit.evaluation.suite import DEFAULT_PERPLEXITY_WINDOWS
from prunekit.export.gguf_layout import check_exportable_family
from prunekit.export.gguf_writer import GGUF_TYPES, QUANTIZER_TYPES, check_gguf_output, check_gguf_type, export_gguf
from prunekit.methods import PLAN_FILE, Plan, RecoveryConfig, default_method, describe_stage, method_names, method_spec, offered_methods
from prunekit.methods.recipe import recipe_configs
from prunekit.methods.registry import spec_for_config
from prunekit.models.adapters import FAMILIES
from prunekit.models.cache import cache_entries, cache_root, clear_cache
from prunekit.models.encoders import is_encoder_config, is_encoder_spec
from prunekit.models.export import check_output_dir, release_all_outputs
from prunekit.models.loading import load_model, peek_model_type, resolve_device
from prunekit.options import add_config_flags, config_options, flag_message, flag_names, flag_text
from prunekit.recovery.checkpoints import RecoveryInterrupted
from prunekit.recovery.distributed import on_main_process
from prunekit.reporting import results_lines, write_report
from prunekit.scoring.blocks import block_metric_names
from prunekit.version import __version__

EXIT_USAGE = 2  # bad input
EXIT_FAILED = 1  # valid input, failed computation (e.g. recovery diverged)
EVALUATION_FIELDS = (
    "ppl seq_len windows tasks data_dir limit task_batch_size flores languages flores_windows speed batch_size offload text_field".split()
)
RECOVERY = "recovery."  # namespace of the recovery flags' destinations (--recovery-seq-len is not --seq-len)
CONFIGS = [method_spec(name).config_cls for name in offered_methods()]
PACKAGE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))  # prunekit's own warnings come from files under it
FLAGS = {
    **flag_names(*CONFIGS, RecoveryConfig),
    "data": "--data",
    "window_seq_len": "--seq-len",  # calibration and evaluation windows (the recovery config's seq_len is --recovery-seq-len)
    "eval_seq_len": "--eval-seq-len",
    "eval_limit": "--eval-limit",
    "windows": "--windows",
    "method": "--method",
    "recipe": "--recipe",
    "limit": "--limit",
    "offload": "--offload",
    "overwrite_run": "--overwrite",
    "overwrite": "--overwrite",
    "out": "--out",
    "device": "--device",
    "dtype": "--dtype",
    "text_field": "--text-field",
    "data_dir": "--data-dir",
    "ppl": "--ppl",
    "tasks": "--tasks",
    "flores": "--flores",
    "speed": "--speed",
    "output_norm": "--output-norm",
    "run_dir": "--run-dir",
}

MODEL_OPTIONS = [
    ("--model", {"required": True, "help": "hub id, local directory, .gguf file, or the alias smollm2-135m"}),
    ("--device", {"default": "auto", "help": "cpu, cuda, cuda:N or auto (default: cuda if available)"}),
    ("--dtype", {"default": "auto", "help": "auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16"}),
    ("--trust-remote-code", {"action": "store_true", "help": "allow custom model code from the hub (off by default)"}),
    ("--json", {"action": "store_true", "help": "print machine-readable JSON on stdout"}),
    ("--quiet", {"action": "store_true", "help": "no progress bars"}),
    ("--text-field", {"default": "text", "help": "the text field of .jsonl/.json records and hub rows (default text)"}),
    ("--seed", {"type": int, "default": 0, "help": "seed for calibration offsets, recovery data and random choices"}),
    ("--batch-size", {"type": int, "default": 1, "help": "windows per forward batch"}),
    ("--offload", {"action": "store_true", "help": "keep only the current block on the device (large models)"}),
]


def _window_defaults() -> str:
    """'default 16; 64 for liar': the calibration windows each method loads when none are asked for."""
    specs = map(method_spec, offered_methods())
    own = [f"{spec.calibration_windows} for {spec.name}" for spec in specs if spec.calibration_windows != DEFAULT_CALIBRATION_WINDOWS]
    return "; ".join([f"default {DEFAULT_CALIBRATION_WINDOWS}", *own])


def _heldout_logging() -> str:
    logging_methods = [name for name in offered_methods() if method_spec(name).logs_heldout]
    return f" ({', '.join(logging_methods)}: also during the run)" if logging_methods else ""


CALIBRATION_OPTIONS = [
    (
        "--data",
        {
            "help": "calibration data: builtin, wikitext2, c4, ptb, a hub id or a .txt/.raw/.jsonl/.json file (default builtin; "
            "with --plan, the data the plan recorded)"
        },
    ),
    ("--windows", {"type": int, "help": f"number of calibration windows ({_window_defaults()})"}),
    ("--seq-len", {"type": int, "default": 512, "help": "tokens per calibration window (default 512)"}),
]
OUTPUT_OPTIONS = [("--out", {"required": True, "help": "output directory"}), ("--overwrite", {"action": "store_true"})]
HELDOUT_OPTIONS = [
    ("--heldout-data", {"default": "builtin", "help": f"perplexity data measured before and after{_heldout_logging()}"}),
    ("--heldout-windows", {"type": int, "default": 4, "help": "held-out windows (0 = none; default 4)"}),
]
PRUNE_OPTIONS = [
    ("--method", {"help": f"one of {', '.join(offered_methods())} (default {default_method()})"}),
    ("--recipe", {"help": "a .yaml/.json list of stages, e.g. [{method: shortgpt, remove: 4}, {recover: {tokens: 200000}}]"}),
    ("--plan", {"help": "re-apply a prunekit_plan.json (file or checkpoint directory); data-driven stages rerun from their settings"}),
    ("--compare", {"action": "store_true", "help": "evaluate before and after; write DIR/report/"}),
    ("--eval-data", {"default": "builtin", "help": "perplexity data for --compare (default: builtin evaluation half)"}),
    (
        "--eval-windows",
        {
            "type": int,
            "default": DEFAULT_PERPLEXITY_WINDOWS,
            "help": f"perplexity windows for --compare (default {DEFAULT_PERPLEXITY_WINDOWS})",
        },
    ),
    ("--eval-seq-len", {"type": int, "default": 512}),
    ("--eval-tasks", {"help": "comma-separated lm-eval tasks for --compare"}),
    ("--eval-data-dir", {"help": "read --eval-tasks from local files (layout of prunekit's shared data)"}),
    ("--eval-limit", {"type": float, "help": "items per task for --compare"}),
    ("--gguf", {"help": "also write the pruned model as this GGUF file, for llama.cpp (see prunekit export)"}),
    ("--gguf-type", {"default": "f16", "help": "GGUF encoding for --gguf (default f16; see prunekit export --help)"}),
]
EVAL_OPTIONS = [
    ("--ppl", {"nargs": "+", "help": "perplexity data: builtin, wikitext2, c4, ptb or local files (default builtin)"}),
    ("--seq-len", {"type": int, "default": 512, "help": "window length (512 or 2048 are common)"}),
    (
        "--windows",
        {
            "type": int,
            "default": DEFAULT_PERPLEXITY_WINDOWS,
            "help": f"perplexity over the first N windows (default {DEFAULT_PERPLEXITY_WINDOWS}, as prune --compare; fewer if the data "
            "has fewer)",
        },
    ),
    ("--tasks", {"help": "comma-separated lm-eval task names, e.g. piqa,arc_easy,hellaswag"}),
    ("--data-dir", {"help": "read the tasks from local files laid out as in prunekit's shared data"}),
    ("--limit", {"type": float, "help": "items per task (a fraction if < 1), for quick runs"}),
    ("--task-batch-size", {"type": int, "default": 8}),
    ("--flores", {"help": "FLORES-200 folder for per-language perplexity"}),
    ("--languages", {"help": "comma-separated FLORES codes (default: all found)"}),
    ("--flores-windows", {"type": int, "help": "windows per language (default: all)"}),
    ("--speed", {"action": "store_true", "help": "prefill/decode tokens/s, peak memory, size"}),
    ("--label", {"help": "name of this model in reports (default: --model)"}),
    ("--out", {"help": "write the results JSON here (for prunekit report)"}),
    ("--overwrite", {"action": "store_true"}),
]


def _add(parser, *tables) -> None:
    """Add each table's flags; a flag with a default that its help does not state gets it appended."""
    for table in tables:
        for flag, options in table:
            default, text = options.get("default"), options.get("help", "")
            if default is not None and default is not False and "default" not in text and options.get("action") != "store_true":
                options = {**options, "help": f"{text} (default {default})".lstrip()}
            parser.add_argument(flag, **options)


def _add_recovery_flags(parser, run_flags: bool = False) -> None:
    group = parser.add_argument_group("recovery (distillation from the dense model; flags left out keep the method's defaults)")
    group.add_argument(
        "--recovery-data",
        default="self",
        help="self (text sampled from the teacher), builtin, a file, a directory or glob of shards (.txt, .jsonl, .jsonl.gz, "
        ".parquet; streamed), a hub dataset (streamed), or a weighted mix such as 'c4/*.jsonl:0.7,code.jsonl:0.3'",
    )
    add_config_flags(group, RecoveryConfig, {"seed"}, RECOVERY)
    if run_flags:
        group.add_argument("--run-dir", help="where training checkpoints go (default: OUT.run, removed when the run finishes)")
        group.add_argument("--resume", action="store_true", help="continue the interrupted run in --run-dir from its last checkpoint")
    group.add_argument("--save-every", type=int, help="tokens between training checkpoints (default: about every ten minutes of training)")


RUN_OPTIONS = ("run_dir", "resume", "overwrite_run")  # a config's own where its method keeps its own run directory (IteRABRe)


def _run_directory(args, trains: bool) -> dict:
    """The job's training checkpoints: --run-dir (default OUT.run) for every stage that trains."""
    if not trains:
        return {}
    run_dir = getattr(args, "run_dir", None) or f"{Path(args.out).expanduser()}.run"
    overwrite = args.overwrite or getattr(args, "overwrite_run", False)
    return {"run_dir": run_dir, "resume": getattr(args, "resume", False), "save_every": args.save_every, "overwrite_run": overwrite}


def _drop_default_run_dir(args, run: dict) -> None:
    """A finished run's directory holds only its settings; the default one beside the output goes."""
    if run and not getattr(args, "run_dir", None):
        on_main_process(lambda: shutil.rmtree(run["run_dir"], ignore_errors=True))


def _recovery(args, base: RecoveryConfig | None, always: bool = False) -> RecoveryConfig | None:
    """The method's recovery default with the recovery flags given; --recovery-tokens 0 means none."""
    given = config_options(args, RecoveryConfig, RECOVERY)
    if given.get("tokens") == 0:
        return None
    if not given and not always:
        return base
    return dataclasses.replace(base or RecoveryConfig(), **given, seed=args.seed)


def _load(args, out: bool = True):
    settings = {name: getattr(args, name) for name in ("overwrite", "device", "dtype", "trust_remote_code", "offload")}
    return jobs.load_checked(args.model, out=args.out if out else None, progress=not args.quiet, **settings)


def _run_options(args) -> dict:
    return {"device": resolve_device(args.device), "progress": not args.quiet, "overwrite": args.overwrite}


def _print(args, payload: dict, lines: list[str]) -> int:
    print(json.dumps(payload, indent=2) if args.json else "\n".join(lines))
    return 0


# -- commands ---------------------------------------------------------------------------------
def cmd_scan(args) -> int:
    loaded = _load(args, out=False)
    scores, payload = jobs.scan_job(
        loaded,
        args.out,
        args.metric,
        span=args.span,
        data=_data(args),
        device=resolve_device(args.device),
        offload=args.offload,
        batch_size=args.batch_size,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    lines = [
        f"{args.metric} scores for {len(scores.scores)} {'blocks' if scores.span == 1 else 'spans'} ({scores.data['tokens']} tokens, "
        f"{scores.seconds:.1f} s); least important first: {scores.ranking()[:10]}",
        f"wrote {shown(payload['json_path'])} and {shown(payload['png_path'])}",
    ]
    return _print(args, payload, lines)


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
        options["recovery"] = _recovery(args, spec.config_cls().recovery)
    config = spec.config_cls(**options)
    config.check()
    recovery = None if trains else _recovery(args, None)
    return [config] + ([recovery] if recovery else []), None


def _data(args) -> jobs.DataSettings:
    names = ("data", "windows", "seq_len", "heldout_data", "heldout_windows", "recovery_data", "text_field", "seed")
    return jobs.DataSettings(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def cmd_prune(args) -> int:
    configs, plan = _stages(args)
    gguf = _gguf_request(args)
    if args.compare and is_encoder_spec(args.model):
        raise PrunekitError("--compare measures causal LMs; evaluate an encoder with benchmarks/encoder_width.py")
    compare = None
    if args.compare:
        tasks = jobs.split_list(args.eval_tasks)
        compare = comparison_request(
            args.eval_data, args.eval_seq_len, args.eval_windows, tasks, args.eval_data_dir, args.eval_limit, args.offload
        )
    loaded = _load(args)
    trains = any(isinstance(c, RecoveryConfig) or getattr(c, "recovery", None) for c in configs or [])
    keeps_its_own = configs and len(configs) == 1 and spec_for_config(configs[0]).own_run_directory
    run = _run_directory(args, trains and not keeps_its_own)
    options = dict(configs=configs, plan=plan, data=_data(args), compare=compare, offload=args.offload, batch_size=args.batch_size)
    job = jobs.prune_job(loaded, args.out, protected=jobs.input_paths(loaded), run=run, **options, **_run_options(args))
    _drop_default_run_dir(args, run)
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
        lines += _gguf_lines(exported)
        payload["gguf"] = _gguf_payload(exported)
    return _print(args, payload, lines)


def shown(path) -> str:
    """A path as the user would type it: relative to the working directory when it is inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _local_inputs(*specs: str | None) -> list[str]:
    """The specs that name files or directories here (an output may not lie on, in or over them)."""
    return [spec for spec in specs if spec and Path(spec).expanduser().exists()]


def _gguf_request(args) -> str | None:
    """The --gguf type, checked with its output before any work; None without --gguf."""
    if not getattr(args, "gguf", None):
        return None
    gguf_type = check_gguf_type(args.gguf_type)
    check_gguf_output(args.gguf, args.overwrite, _local_inputs(args.model))
    return gguf_type


def _gguf_lines(exported) -> list[str]:
    return [f"note: {note}" for note in exported.notes] + [
        f"GGUF ({exported.architecture}, {exported.type}, {exported.bytes / 2**20:.1f} MiB) written to {exported.path}"
    ]


def _gguf_payload(exported) -> dict:
    return {
        "path": str(exported.path),
        "architecture": exported.architecture,
        "type": exported.type,
        "bytes": exported.bytes,
        "notes": exported.notes,
    }


def cmd_export(args) -> int:
    gguf_type = check_gguf_type(args.type)
    out = check_gguf_output(args.out, args.overwrite, _local_inputs(args.model))
    if is_encoder_spec(args.model):
        raise PrunekitError(f"{args.model} is an encoder; GGUF export writes decoder language models")
    model_type = peek_model_type(args.model)  # from the config or GGUF header: refused before a slow conversion
    if model_type in FAMILIES:
        check_exportable_family(FAMILIES[model_type].name)
    loaded = load_model(args.model, device="cpu", dtype=args.dtype, trust_remote_code=args.trust_remote_code, progress=not args.quiet)
    if is_encoder_config(loaded.model.config):
        raise PrunekitError(f"{args.model} is an encoder; GGUF export writes decoder language models")
    exported = export_gguf(
        loaded.model,
        loaded.tokenizer,
        out,
        gguf_type=gguf_type,
        overwrite=args.overwrite,
        name=Path(loaded.location).name,
        protected=jobs.input_paths(loaded),
    )
    return _print(args, _gguf_payload(exported), _gguf_lines(exported))


def cmd_method(args) -> int:
    """A method offered as a command of its own (e.g. growing a model deeper): a prune with that method alone."""
    args.method, args.recipe, args.plan, args.compare = args.command, None, None, False  # prune's evaluation flags stay unread
    return cmd_prune(args)


def cmd_recover(args) -> int:
    distil = args.teacher is not None
    config = _recovery(args, RecoveryConfig(kd_weight=float(distil), lm_weight=float(not distil)), always=True)
    jobs.check_recovery_request(config, distil, args.recovery_data)
    loaded = _load(args)
    teacher = load_model(args.teacher, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code) if distil else None
    protected = jobs.input_paths(loaded) + (jobs.input_paths(teacher) if teacher else [])
    check_output_dir(args.out, args.overwrite, protected)
    run = _run_directory(args, True)
    job = jobs.recover_job(loaded, args.out, config, teacher=teacher, data=_data(args), protected=protected, run=run, **_run_options(args))
    _drop_default_run_dir(args, run)
    summary = job.evaluation["recovery"]
    lines = [
        describe_stage({"method": "recover", "details": summary}),
        f"recovered checkpoint written to {job.out} (log: {job.out / 'prunekit_recovery.json'})",
    ]
    return _print(args, {"out": str(job.out), "recovery": summary}, lines)


def cmd_eval(args) -> int:
    jobs.check_results_path(args.out, args.overwrite, _local_inputs(args.model))
    check_limit(args.limit)
    request = jobs.evaluation_request(**{name: getattr(args, name) for name in EVALUATION_FIELDS})
    results = jobs.eval_job(
        _load(args, out=False), request, out=args.out, device=resolve_device(args.device), progress=not args.quiet, label=args.label
    )
    return _print(args, results, results_lines(args.model, results) + ([f"wrote {shown(args.out)}"] if args.out else []))


def cmd_cache(args) -> int:
    if args.clear:
        cleared = clear_cache()
        root = cache_root()
        lines = [f"removed {cleared.freed / 2**20:.0f} MiB ({len(cleared.removed)} entries) from {root}"]
        lines += [f"kept {path}: not an entry prunekit finished writing" for path in cleared.foreign]
        payload = {
            "root": str(root),
            "freed_bytes": cleared.freed,
            "removed": [str(p) for p in cleared.removed],
            "kept": [str(p) for p in cleared.foreign],
            "failed": [{"path": str(p), "error": why} for p, why in cleared.failed],
        }
        _print(args, payload, lines)
        if cleared.failed:
            path, why = cleared.failed[0]
            more = f" and {len(cleared.failed) - 1} more" if len(cleared.failed) > 1 else ""
            raise ComputationError(f"could not remove {path}{more} ({why}); check its permissions and run prunekit cache --clear again")
        return 0
    listing = cache_entries()
    lines = [f"{size / 2**20:8.0f} MiB  {path}" for path, size in listing.entries]
    lines += [f"    kept  {path} (not prunekit's, or unfinished: --clear leaves it)" for path in listing.foreign]
    lines.append(f"{listing.bytes / 2**20:8.0f} MiB in {listing.root} (prunekit cache --clear removes it; PRUNEKIT_CACHE moves it)")
    payload = {
        "root": str(listing.root),
        "entries": [{"path": str(p), "bytes": s} for p, s in listing.entries],
        "bytes": listing.bytes,
        "kept": [str(p) for p in listing.foreign],
    }
    return _print(args, payload, lines)


def cmd_report(args) -> int:
    paths = write_report(args.results, args.out, overwrite=args.overwrite, baseline=args.baseline)
    return _print(args, {k: str(v) for k, v in paths.items()}, [f"wrote {shown(paths['markdown'])} and {shown(paths['html'])}"])


# -- parser -----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Argument errors in one line that points to --help, not the whole usage block. Flags are never abbreviated:
    `--recovery-token 5` is an error, not `--recovery-tokens 5`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"prunekit: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """An unknown flag is reported by its command's parser, with the closest flag it has (--ffn_ratio: --ffn-ratio)."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
            command = commands.choices.get(getattr(parsed, "command", None)) if commands else None
            parser = command or self
            flags = list(parser._option_string_actions)
            guess = difflib.get_close_matches(unknown[0].split("=")[0].replace("_", "-"), flags, n=1, cutoff=0.75)
            parser.error(f"unrecognized argument {unknown[0]}" + (f"; did you mean {guess[0]}?" if guess else ""))
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunekit", description="Structured pruning of LLMs.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", help="score every decoder block; write JSON and a PNG chart")
    _add(scan, MODEL_OPTIONS, CALIBRATION_OPTIONS)
    scan.add_argument("--metric", default="bi", help=f"one of {', '.join(block_metric_names())} (default bi)")
    scan.add_argument("--span", type=int, default=1, help="blocks per span for --metric angular")
    scan.add_argument("--out", default="prunekit_scan.json", help="JSON output path; the PNG goes beside it")
    scan.add_argument("--overwrite", action="store_true")

    prune = sub.add_parser("prune", help="prune by a method, a recipe or a saved plan; write a checkpoint plus prunekit_plan.json")
    _add(prune, MODEL_OPTIONS, CALIBRATION_OPTIONS, OUTPUT_OPTIONS, PRUNE_OPTIONS, HELDOUT_OPTIONS)
    seen = {"seed"}
    for config_cls in CONFIGS:
        add_config_flags(prune.add_argument_group(f"{config_cls.__name__} options"), config_cls, seen, others=tuple(CONFIGS))
    _add_recovery_flags(prune)

    evaluate = sub.add_parser("eval", help="perplexity, zero-shot tasks, multilingual perplexity and speed of a model")
    _add(evaluate, MODEL_OPTIONS, EVAL_OPTIONS)

    recover = sub.add_parser("recover", help="distil a dense teacher into a pruned model on a token budget")
    _add(recover, MODEL_OPTIONS, OUTPUT_OPTIONS, HELDOUT_OPTIONS)
    recover.add_argument("--teacher", help="the dense model to distil from (without one, plain next-token training)")
    _add_recovery_flags(recover, run_flags=True)

    for spec in map(method_spec, method_names()):
        if not spec.command_help:
            continue
        command = sub.add_parser(spec.name, help=spec.command_help)
        _add(command, MODEL_OPTIONS, OUTPUT_OPTIONS)
        add_config_flags(command.add_argument_group(f"{spec.name} options"), spec.config_cls, {"seed"})
        _add_recovery_flags(command, run_flags=True)
        command.set_defaults(data="builtin", windows=0, seq_len=512, heldout_windows=0, func=cmd_method)

    export = sub.add_parser("export", help="write a model as a GGUF file that llama.cpp, ollama and LM Studio run")
    export.add_argument("--model", required=True, help="a checkpoint directory (pruned or not), hub id or alias")
    export.add_argument("--to", default="gguf", choices=["gguf"], help="output format (gguf)")
    export.add_argument("--out", required=True, help="the .gguf file to write")
    export.add_argument(
        "--type",
        default="f16",
        help=f"{', '.join(GGUF_TYPES)} (written directly) or {', '.join(QUANTIZER_TYPES)} (through llama.cpp's quantizer, "
        "which needs llama-cpp-python); default f16",
    )
    export.add_argument(
        "--dtype",
        default="float32",
        help="precision the model is held in while writing (default float32; bfloat16 halves the memory of a bf16 checkpoint, "
        "and each tensor is widened to f32 only while it is encoded)",
    )
    export.add_argument("--overwrite", action="store_true")
    export.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub (off by default)")
    export.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    export.add_argument("--quiet", action="store_true", help="no progress bars")

    cache = sub.add_parser("cache", help="list (or --clear) the converted models prunekit keeps, with their sizes")
    cache.add_argument("--clear", action="store_true", help="remove every cached model (they are converted again when needed)")
    cache.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")

    report = sub.add_parser("report", help="Markdown + HTML report with tables and plots from eval results")
    report.add_argument("results", nargs="+", help="results JSON files written by prunekit eval --out")
    _add(report, OUTPUT_OPTIONS)
    report.add_argument("--baseline", help="label or file of the dense model for ratios (default: the one with most blocks)")
    report.add_argument("--json", action="store_true")
    commands = {
        "scan": cmd_scan,
        "prune": cmd_prune,
        "eval": cmd_eval,
        "recover": cmd_recover,
        "export": cmd_export,
        "cache": cmd_cache,
        "report": cmd_report,
    }
    for name, command in commands.items():
        sub.choices[name].set_defaults(func=command)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and `timeout` send) unwinds like Ctrl-C, so temporary output is removed."""


_signals_received: list[int] = []


def _terminated(signum, frame):
    _signals_received.append(signum)
    raise _Terminated


def _interrupted(signum, frame):
    _signals_received.append(signum)
    raise KeyboardInterrupt


def _stopped(terminated: bool) -> int:
    """The line and exit code of a run that a signal stopped (SIGTERM 143, Ctrl-C 130)."""
    print(f"prunekit: {'terminated' if terminated else 'interrupted'}; no partial output was written", file=sys.stderr)
    return 143 if terminated else 130


class _FlagSpelling(logging.Filter):
    """Log lines name parameters (`tokens`); the command line's user reads flags (--recovery-tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = flag_text(record.getMessage(), FLAGS), None
        return True


def _speak_in_flags() -> None:
    """prunekit's own warnings and log lines name flags, as its errors do."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _FlagSpelling) for f in handler.filters):
            handler.addFilter(_FlagSpelling())
    show = warnings.showwarning
    if getattr(show, "spells_flags", False):
        return

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(PACKAGE_DIRECTORY):
            message = flag_text(str(message), FLAGS)
        show(message, category, filename, lineno, file, line)

    show_warning.spells_flags = True
    warnings.showwarning = show_warning


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
        signal.signal(signal.SIGINT, _interrupted)
    _signals_received.clear()
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _speak_in_flags()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.update({"TQDM_DISABLE": "1"} if getattr(args, "quiet", False) else {})
    # under torchrun / accelerate launch only the main process reports (its results and its errors)
    main_process = int(os.environ.get("RANK", "0")) == 0
    report = contextlib.nullcontext() if main_process else contextlib.redirect_stdout(io.StringIO())
    say = functools.partial(print, file=sys.stderr) if main_process else (lambda *a, **k: None)
    try:
        if getattr(args, "batch_size", 1) < 1:
            raise PrunekitError(f"--batch-size {args.batch_size} must be at least 1")
        with report:
            return args.func(args)
    except (PrunekitError, ComputationError) as error:
        # a library (transformers' lazy imports, for one) may report an interrupted import as its own error
        if _signals_received:
            return _stopped(_signals_received[0] == signal.SIGTERM)
        if isinstance(error, PrunekitError):
            say(f"prunekit: error: {flag_message(error, FLAGS)}")
            return EXIT_USAGE
        say(f"prunekit: failed: {flag_message(error, FLAGS)}")
        return EXIT_FAILED
    except RecoveryInterrupted as stopped:
        command = " ".join(shlex.quote(a) for a in ["prunekit", *(sys.argv[1:] if argv is None else argv)])
        command += "" if "--resume" in command.split() else " --resume"
        say(
            f"prunekit: stopped by {stopped.signal_name} after step {stopped.step} of {stopped.steps}; checkpoint {stopped.checkpoint}; "
            f"continue with: {command}"
        )
        return 143
    except KeyboardInterrupt as interrupt:
        return _stopped(isinstance(interrupt, _Terminated))
    finally:
        release_all_outputs()


if __name__ == "__main__":
    sys.exit(main())
