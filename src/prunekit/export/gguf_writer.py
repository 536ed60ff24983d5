"""Write a model as one GGUF file with llama.cpp's own writer (`gguf`), atomically.

f32, f16, bf16 and q8_0 are encoded here by `gguf`; the k-quants and the other legacy types go through
llama.cpp's quantizer (`llama_model_quantize`, from llama-cpp-python) applied to an f32 file. As in
llama.cpp's converter, 1-D tensors (norms, biases) stay f32 and a matrix whose rows do not split into
q8_0 blocks of 32 is written as f16.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from prunekit.errors import PrunekitError
from prunekit.export.gguf_layout import GgufLayout, gemma3_rope, gguf_layout
from prunekit.export.gguf_tensors import gguf_tensors, rope_parameters
from prunekit.export.gguf_vocab import add_vocabulary
from prunekit.models.adapters import ModelAdapter
from prunekit.models.export import check_output_file, claim_output, readable_like_save_pretrained, release_output, with_loaded_from

Q = gguf.GGMLQuantizationType
F = gguf.LlamaFileType
# --type -> (file type, encoding of matrices), written by gguf here
GGUF_TYPES = {"f32": (F.ALL_F32, Q.F32), "f16": (F.MOSTLY_F16, Q.F16), "bf16": (F.MOSTLY_BF16, Q.BF16), "q8_0": (F.MOSTLY_Q8_0, Q.Q8_0)}
# --type -> file type, made by llama.cpp's quantizer from an f32 file (needs llama-cpp-python)
QUANTIZER_TYPES = {
    "q4_0": F.MOSTLY_Q4_0,
    "q4_1": F.MOSTLY_Q4_1,
    "q5_0": F.MOSTLY_Q5_0,
    "q5_1": F.MOSTLY_Q5_1,
    "q2_k": F.MOSTLY_Q2_K,
    "q3_k_m": F.MOSTLY_Q3_K_M,
    "q4_k_s": F.MOSTLY_Q4_K_S,
    "q4_k_m": F.MOSTLY_Q4_K_M,
    "q5_k_s": F.MOSTLY_Q5_K_S,
    "q5_k_m": F.MOSTLY_Q5_K_M,
    "q6_k": F.MOSTLY_Q6_K,
}
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}
ROPE_TYPES = ("default", "llama3", "linear")


@dataclass
class GgufExport:
    path: Path
    architecture: str
    type: str
    bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def check_gguf_type(name: str) -> str:
    name = name.lower()
    if name not in GGUF_TYPES and name not in QUANTIZER_TYPES:
        raise PrunekitError(f"unknown GGUF type '{name}'; choose one of {', '.join([*GGUF_TYPES, *QUANTIZER_TYPES])}")
    return name


def check_gguf_output(out: str | os.PathLike, overwrite: bool = False, protected: list[str | os.PathLike] = ()) -> Path:
    """Refuse, before any work, an output that exists (unless overwrite), is a directory, lies over an input
    (`protected`) or cannot be written."""
    return check_output_file(out, overwrite, kind="GGUF", example="model.gguf", protected=protected)


def _rope(config, layout: GgufLayout) -> dict:
    """The rope settings llama.cpp applies with its `rope.freq_base` (Gemma-3: those of its global layers)."""
    return gemma3_rope(config)["full_attention"] if layout.architecture == "gemma3" else rope_parameters(config)


def _header(writer: gguf.GGUFWriter, model, layout: GgufLayout, file_type: int, name: str) -> None:
    config = model.config
    rope = _rope(config, layout)
    rope_type = (rope.get("rope_type") or rope.get("type") or "default").lower()
    if rope_type not in ROPE_TYPES:
        raise PrunekitError(f"GGUF export handles rope types {', '.join(ROPE_TYPES)}; this model uses '{rope_type}'")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(len(layout.layers))
    heads, kv_heads, ffn = ([getattr(s, k) for s in layout.layers] for k in ("heads", "kv_heads", "ffn"))
    if layout.per_layer:
        writer.add_feed_forward_length(ffn)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
    else:
        writer.add_feed_forward_length(ffn[0])
        writer.add_head_count(heads[0])
        writer.add_head_count_kv(kv_heads[0])
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_key_length(layout.head_dim)
    writer.add_value_length(layout.head_dim)
    rotary = rope.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None) or 1.0
    writer.add_rope_dimension_count(int(layout.head_dim * rotary))
    if layout.architecture == "gemma3":
        _gemma3_header(writer, config, len(layout.layers))
    writer.add_vocab_size(ModelAdapter(model).base.embed_tokens.weight.shape[0])
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _gemma3_header(writer: gguf.GGUFWriter, config, layers: int) -> None:
    """Which layers attend through the sliding window, one flag per layer (pruning breaks Gemma-3's every-sixth
    pattern, which llama.cpp assumes without it), and the local layers' rope base. A model without sliding layers
    still gets a window: llama.cpp's gemma3 graph without one divides by a zero logit soft-cap."""
    kinds = list(getattr(config, "layer_types", None) or ["full_attention"] * layers)
    writer.add_sliding_window(int(getattr(config, "sliding_window", None) or config.max_position_embeddings))
    writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in kinds])
    writer.add_rope_freq_base_swa(float(gemma3_rope(config)["sliding_attention"].get("rope_theta", 10000.0)))


def _encoding_of(shape: tuple[int, ...], encoding: Q) -> Q:
    """What a tensor of `shape` is stored as: vectors in f32, and f16 for rows that do not split into the
    type's blocks (e.g. a pruned width not a multiple of 32)."""
    if len(shape) == 1 or encoding == Q.F32:
        return Q.F32
    if encoding != Q.F16 and shape[-1] % gguf.GGML_QUANT_SIZES[encoding][0]:
        return Q.F16
    return encoding


def _stored_layout(shape: tuple[int, ...], kind: Q) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and bytes the encoded tensor will have, without encoding it."""
    if kind in (Q.F32, Q.F16):
        dtype = np.dtype(np.float32 if kind == Q.F32 else np.float16)
        return shape, dtype, int(np.prod(shape)) * dtype.itemsize
    stored = gguf.quants.quant_shape_to_byte_shape(shape, kind)
    return stored, np.dtype(np.uint8), int(np.prod(stored))


def _encoded(array: np.ndarray, kind: Q) -> np.ndarray:
    if kind == Q.F32:
        return array
    if kind == Q.F16:
        return array.astype(np.float16)
    return gguf.quants.quantize(array, kind)


# llama.cpp's vocabulary loader looks these tokens up in any model whose name says Phi-3, and fails if one is missing
PHI3_NAMED_TOKENS = ("<unk>", "<s>", "</s>", "<|endoftext|>")


def loadable_name(name: str, tokenizer) -> str:
    """`name`, unless it would make llama.cpp look up Phi-3's special tokens in a vocabulary without them."""
    if re.search(r"phi-?3", name, re.IGNORECASE) and not set(PHI3_NAMED_TOKENS) <= set(tokenizer.get_vocab()):
        return re.sub(r"(?i)(phi-?)3", r"\g<1> 3", name)
    return name


def _write(model, tokenizer, layout: GgufLayout, path: Path, gguf_type: str, name: str) -> list[str]:
    file_type, encoding = GGUF_TYPES[gguf_type]
    writer = gguf.GGUFWriter(path=None, arch=layout.architecture)
    _header(writer, model, layout, file_type, loadable_name(name, tokenizer))
    with tempfile.TemporaryDirectory(prefix="prunekit-tokenizer-") as tokenizer_dir:
        tokenizer.save_pretrained(tokenizer_dir)
        notes = add_vocabulary(writer, tokenizer_dir, tokenizer, ModelAdapter(model).base.embed_tokens.weight.shape[0])
    # Two passes over the tensors: their stored sizes for the header (worked out, not encoded), then their
    # data encoded one at a time, so memory holds the model and one encoded tensor, not a second copy.
    fallback = 0
    for tensor_name, tensor in gguf_tensors(model, layout):
        kind = _encoding_of(tuple(tensor.shape), encoding)
        fallback += kind == Q.F16 and encoding not in (Q.F16, Q.F32)
        stored, dtype, nbytes = _stored_layout(tuple(tensor.shape), kind)
        writer.add_tensor_info(tensor_name, stored, dtype, nbytes, raw_dtype=kind)
    if fallback:
        notes.append(f"{fallback} matrices whose rows do not split into {gguf_type} blocks of 32 are f16 (round widths to 32 to avoid it)")
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, tensor in gguf_tensors(model, layout):
        array = tensor.numpy()
        writer.write_tensor_data(_encoded(array, _encoding_of(array.shape, encoding)))
    writer.close()
    return notes


_FALLBACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """llama.cpp's log (the quantizer's, the context's) caught, whether it writes it to file descriptor 2 (which no Python switch reaches)
    or llama-cpp-python's log callback prints it to sys.stderr; the lines are in the yielded list afterwards."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    printed = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as log_file:
        os.dup2(log_file.fileno(), 2)
        try:
            with contextlib.redirect_stderr(printed):
                yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log_file.seek(0)
            lines += log_file.read().decode(errors="replace").splitlines() + printed.getvalue().splitlines()


def _quantize(source: Path, target: Path, gguf_type: str) -> list[str]:
    """llama.cpp's quantizer, its log kept out of the terminal; returns prunekit's notes on what it did."""
    try:
        import llama_cpp
    except ImportError as error:
        raise PrunekitError(
            f"--type {gguf_type} uses llama.cpp's quantizer: pip install llama-cpp-python, or export f16 and run llama-quantize on it"
        ) from error
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANTIZER_TYPES[gguf_type])
    params.nthread = os.cpu_count() or 1
    with captured_stderr() as log_lines:
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0
    if failed:
        last = next((line.strip() for line in reversed(log_lines) if line.strip()), "no message")
        raise PrunekitError(f"llama.cpp's quantizer failed to make {gguf_type} from {source.name} ({last[:160]})")
    found = next((match for line in log_lines if (match := _FALLBACK.search(line))), None)
    if found is None or not gguf_type.startswith(("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")):
        return []
    return [
        f"{found[1]} of {found[2]} tensors are not in {gguf_type}'s k-quant blocks: their rows are not a multiple of 256 "
        "values, so llama.cpp stored them in a fallback type; the file is larger and the quality closer to that type's"
    ]


def _needed_bytes(model, gguf_type: str) -> int:
    weights = sum(p.numel() for p in model.parameters())
    return int(weights * BYTES_PER_WEIGHT.get(gguf_type, 4.0 + 1.0))  # a quantized type first writes an f32 file


def export_gguf(
    model,
    tokenizer,
    out: str | os.PathLike,
    *,
    gguf_type: str = "f16",
    overwrite: bool = False,
    name: str | None = None,
    protected: list[str | os.PathLike] = (),
) -> GgufExport:
    """Write `model` and `tokenizer` as one GGUF file at `out` (a temporary name, renamed when complete).

    Uniform models get their native llama.cpp architecture, per-layer widths get `deci`; a model llama.cpp
    cannot run is refused before anything is written. `out` may not lie in, on or over `protected` nor the
    directory the model was loaded from. Returns where it went, the architecture and notes.
    """
    started = time.perf_counter()
    gguf_type = check_gguf_type(gguf_type)
    path = check_gguf_output(out, overwrite, with_loaded_from(model, protected))
    claim_output(path)  # a second run writing the same file stops at once
    try:
        return _export(model, tokenizer, path, layout=gguf_layout(model), gguf_type=gguf_type, name=name, started=started)
    finally:
        release_output(path)


def _export(model, tokenizer, path: Path, *, layout: GgufLayout, gguf_type: str, name: str | None, started: float) -> GgufExport:
    path.parent.mkdir(parents=True, exist_ok=True)
    needed, free = _needed_bytes(model, gguf_type), shutil.disk_usage(path.parent).free
    if needed > free:
        raise PrunekitError(f"the GGUF file needs about {needed / 2**30:.1f} GiB but {path.parent} has {free / 2**30:.1f} GiB free")
    name = name or getattr(model.config, "_name_or_path", "") or path.stem
    staged = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        first = staged / ("model.f32.gguf" if gguf_type in QUANTIZER_TYPES else "model.gguf")
        notes = _write(model, tokenizer, layout, first, "f32" if gguf_type in QUANTIZER_TYPES else gguf_type, Path(name).name)
        final = first
        if gguf_type in QUANTIZER_TYPES:
            final = staged / "model.gguf"
            notes += _quantize(first, final, gguf_type)
        readable_like_save_pretrained(staged)  # the file gets the permissions a plain save would
        os.replace(final, path)
    except OSError as error:
        raise PrunekitError(f"could not write {path} ({error.strerror or error}); nothing was written") from error
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return GgufExport(path, layout.architecture, gguf_type, path.stat().st_size, time.perf_counter() - started, layout.notes + notes)
