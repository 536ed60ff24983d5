"""`prunekit export`: a model as one GGUF file for llama.cpp, ollama and LM Studio, or as a DeciLM checkpoint for vLLM."""

from __future__ import annotations

from pathlib import Path

from prunekit import jobs
from prunekit.commands.common import (
    local_inputs,
    print_result,
)
from prunekit.errors import PrunekitError
from prunekit.export.decilm import export_decilm
from prunekit.export.gguf_layout import check_exportable_family
from prunekit.export.gguf_writer import GGUF_TYPES, QUANTIZER_TYPES, check_gguf_output, check_gguf_type, export_gguf
from prunekit.models.adapters import FAMILIES
from prunekit.models.encoders import is_encoder_config, is_encoder_spec
from prunekit.models.export import check_output_dir
from prunekit.models.loading import load_model, peek_model_type


def gguf_lines(exported) -> list[str]:
    return [f"note: {note}" for note in exported.notes] + [
        f"GGUF ({exported.architecture}, {exported.type}, {exported.bytes / 2**20:.1f} MiB) written to {exported.path}"
    ]


def gguf_payload(exported) -> dict:
    return {
        "path": str(exported.path),
        "architecture": exported.architecture,
        "type": exported.type,
        "bytes": exported.bytes,
        "notes": exported.notes,
    }


def decilm_lines(exported) -> list[str]:
    kind = "DeciLM (nemotron-nas) checkpoint" if exported.decilm else "checkpoint"
    how = " (serve with trust_remote_code: it carries its configuration module)" if exported.decilm else ""
    return [f"note: {note}" for note in exported.notes] + [f"{kind} for vLLM written to {exported.path}{how}"]


def decilm_payload(exported) -> dict:
    return {"path": str(exported.path), "layers": len(exported.layers), "padded_heads": exported.padded_heads, "notes": exported.notes}


def cmd_export_decilm(args) -> int:
    """--to vllm: per-layer widths as a DeciLM checkpoint directory; a uniform model as a plain one."""
    check_output_dir(args.out, args.overwrite, local_inputs(args.model))
    if is_encoder_spec(args.model):
        raise PrunekitError(f"{args.model} is an encoder; the vLLM export writes decoder language models")
    loaded = load_model(args.model, device="cpu", dtype=args.dtype, trust_remote_code=args.trust_remote_code, progress=not args.quiet)
    exported = export_decilm(loaded.model, loaded.tokenizer, args.out, overwrite=args.overwrite, protected=jobs.input_paths(loaded))
    return print_result(args, decilm_payload(exported), decilm_lines(exported))


def cmd_export(args) -> int:
    if args.to == "vllm":
        return cmd_export_decilm(args)
    gguf_type = check_gguf_type(args.type)
    out = check_gguf_output(args.out, args.overwrite, local_inputs(args.model))
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
    return print_result(args, gguf_payload(exported), gguf_lines(exported))


def register(sub) -> None:
    export = sub.add_parser("export", help="write a model as a GGUF file (llama.cpp, ollama, LM Studio) or a DeciLM checkpoint (vLLM)")
    export.add_argument("--model", required=True, help="a checkpoint directory (pruned or not), hub id or alias")
    export.add_argument(
        "--to",
        default="gguf",
        choices=["gguf", "vllm"],
        help="gguf (one file) or vllm (a directory: DeciLM for per-layer widths, a plain checkpoint otherwise); default gguf",
    )
    export.add_argument("--out", required=True, help="the .gguf file to write (--to vllm: the directory)")
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
    sub.choices["export"].set_defaults(func=cmd_export)
