"""`prunekit fit`: the best model for a budget (file size, parameters, decode speed), against quantizing alone."""

from __future__ import annotations

from prunekit import jobs
from prunekit.commands.common import local_inputs, print_result, shown
from prunekit.data.windows import load_windows
from prunekit.errors import ParameterError, PrunekitError
from prunekit.export.gguf_layout import NATIVE_ARCHITECTURES
from prunekit.export.gguf_writer import GGUF_TYPES, QUANTIZER_TYPES, check_gguf_output, check_gguf_type
from prunekit.fitting import DEFAULT_TYPES, FitTargets, fit, parse_bytes, parse_params, parse_speedup
from prunekit.fitting.report import report_lines, write_report_files
from prunekit.methods.liar.config import LiarConfig
from prunekit.models.adapters import FAMILIES, parameter_count
from prunekit.models.encoders import is_encoder_spec
from prunekit.models.export import check_output_dir
from prunekit.models.loading import peek_model_type


def _types(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ParameterError("--types", "is empty; list GGUF types such as q8_0,q4_k_m")
    for name in names:
        try:
            check_gguf_type(name)
        except PrunekitError:
            raise ParameterError(
                "--types", f"'{name}' is not a GGUF type; choose from {', '.join([*GGUF_TYPES, *QUANTIZER_TYPES])}"
            ) from None
    return names


def _checked_targets(args) -> FitTargets:
    """The targets, their units parsed; a parameter share is resolved once the model is loaded."""
    targets = FitTargets(
        max_bytes=parse_bytes(args.max_bytes) if args.max_bytes is not None else None,
        min_speedup=parse_speedup(args.min_speedup) if args.min_speedup is not None else None,
    )
    if args.max_params is not None:
        parse_params(args.max_params, dense_params=1)  # units checked before the model loads
    elif targets.max_bytes is None and targets.min_speedup is None:
        raise ParameterError("--max-bytes", "or --max-params or --min-speedup: give at least one target")
    for flag, value in (("--windows", args.windows), ("--heldout-windows", args.heldout_windows), ("--candidates", args.candidates)):
        if value < 1:
            raise ParameterError(flag, f"{value} must be at least 1")
    if args.seq_len < 8:
        raise ParameterError("--seq-len", f"{args.seq_len} must be at least 8 tokens")
    return targets


def cmd_fit(args) -> int:
    targets = _checked_targets(args)
    types = _types(args.types)
    inputs = local_inputs(args.model, args.data, args.heldout_data, args.library)
    check_output_dir(args.out, args.overwrite, inputs)
    if args.gguf is not None:
        check_gguf_output(args.gguf, args.overwrite, inputs)
    if is_encoder_spec(args.model):
        raise PrunekitError(f"{args.model} is an encoder; fit measures decoder language models in llama.cpp")
    model_type = peek_model_type(args.model)
    if model_type in FAMILIES and FAMILIES[model_type].name not in NATIVE_ARCHITECTURES:
        raise ParameterError(
            "--model",
            f"is a {FAMILIES[model_type].name} model, which has no GGUF form in prunekit; fit measures its candidates in llama.cpp "
            f"and supports {', '.join(NATIVE_ARCHITECTURES)} models",
        )
    loaded = jobs.load_checked(args.model, out=args.out, overwrite=args.overwrite, device="cpu", dtype="float32", progress=not args.quiet)
    model, tokenizer = loaded.model, loaded.tokenizer
    if args.max_params is not None:
        targets.max_params = parse_params(args.max_params, dense_params=parameter_count(model))
    calibration = load_windows(args.data, tokenizer, purpose="calibration", num_windows=args.windows, seq_len=args.seq_len, seed=args.seed)
    heldout = load_windows(args.heldout_data, tokenizer, purpose="evaluation", num_windows=args.heldout_windows, seq_len=args.seq_len)
    if heldout.input_ids.shape[0] < 2:
        raise ParameterError("--heldout-data", "gives fewer than 2 windows; paired comparisons need more text (or a shorter --seq-len)")
    result = fit(
        model,
        tokenizer,
        targets,
        calibration,
        heldout,
        out=args.out,
        gguf=args.gguf,
        types=types,
        candidates=args.candidates,
        library_dir=args.library,
        liar=LiarConfig(ratio=0.5, criterion=args.criterion, seed=args.seed),
        threads=args.threads,
        overwrite=True,  # checked above, before the model loaded
        protected=jobs.input_paths(loaded),
        progress=not args.quiet,
    )
    write_report_files(result, result.out)
    lines = report_lines(result)
    lines.append(f"checkpoint written to {shown(result.out)}" + (f"; GGUF to {shown(result.gguf)}" if result.gguf else ""))
    return print_result(args, result.report, lines)


def register(sub) -> None:
    parser = sub.add_parser(
        "fit",
        help="the best model within a budget (file size, parameters, decode speed): pruned, quantized, or both",
        description=(
            "Builds a per-layer library (each layer narrowed or dropped, scored alone against the dense model), solves a "
            "mixed-integer program per GGUF type, builds the best candidates and measures them in llama.cpp beside the dense "
            "model's quantization ladder and uniform ShortGPT and LIAR; returns the best that meets every target."
        ),
    )
    parser.add_argument("--model", required=True, help="a checkpoint directory, hub id or alias (smollm2-135m)")
    parser.add_argument("--max-bytes", help="largest GGUF file: 80MiB, 100MB, 1.5GiB or a byte count")
    parser.add_argument("--max-params", help="most parameters: a count (100M, 1.2B) or a share of the dense model (0.7, 70%%)")
    parser.add_argument("--min-speedup", help="least decode speed in llama.cpp over the dense model's at the same type (1.2 or 1.2x)")
    parser.add_argument("--out", required=True, help="directory for the chosen checkpoint, its recipe and the report")
    parser.add_argument("--gguf", help="where to write the chosen model's GGUF file")
    parser.add_argument("--data", default="builtin", help="calibration text SPEC (default builtin; C4 or your own text is better)")
    parser.add_argument("--windows", type=int, default=64, help="calibration windows (default 64)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per window (default 512)")
    parser.add_argument("--heldout-data", default="builtin", help="held-out text SPEC every contender is measured on (default builtin)")
    parser.add_argument("--heldout-windows", type=int, default=16, help="held-out windows (default 16)")
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES), help=f"GGUF types to consider (default {','.join(DEFAULT_TYPES)})")
    parser.add_argument("--candidates", type=int, default=3, help="fitted structures built and measured whole (default 3)")
    parser.add_argument("--library", help="the library's directory (default: in prunekit's cache); a rerun resumes there")
    parser.add_argument("--criterion", default="wanda", help="LIAR's channel criterion (wanda, magnitude or fluctuation)")
    parser.add_argument("--threads", type=int, help="llama.cpp threads for the speed measurements (default: the cores here)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress")
    parser.set_defaults(func=cmd_fit)
