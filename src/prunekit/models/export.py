"""Writing checkpoints: atomically, never over the input, always loadable by plain transformers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prunekit.errors import PrunekitError


def check_output_dir(out: str | os.PathLike, overwrite: bool, protected: list[str | os.PathLike] = ()) -> Path:
    """Refuse a non-empty output directory (unless overwrite) and any path holding an input model."""
    out_path = Path(out).expanduser().resolve()
    for source in protected:
        source_path = Path(source).expanduser().resolve()
        if out_path == source_path or source_path in out_path.parents or out_path in source_path.parents:
            raise PrunekitError(f"output directory {out_path} would overwrite the input model {source_path}; choose another --out")
    if out_path.exists() and not out_path.is_dir():
        raise PrunekitError(f"output path {out_path} exists and is not a directory; choose another --out")
    if out_path.is_dir() and any(out_path.iterdir()) and not overwrite:
        raise PrunekitError(f"output directory {out_path} is not empty; pass --overwrite or choose another --out")
    return out_path


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; on success it replaces `out` in one rename.

    A crash or Ctrl-C leaves `out` as it was (the temporary directory is removed).
    """
    out_path = Path(out).expanduser().resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    try:
        yield tmp
        backup = None
        if out_path.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.old-", dir=out_path.parent))
            backup.rmdir()
            os.rename(out_path, backup)
        os.rename(tmp, out_path)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def strip_gguf_quantizer(model) -> None:
    """A GGUF-loaded model holds dequantized weights but refuses save_pretrained until this is gone."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config") and getattr(model.config.quantization_config, "quant_method", None) == "gguf":
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def unique_tensors(weights: dict) -> dict:
    """Drop later names of tensors sharing storage (tied embeddings): safetensors stores each once."""
    seen: set[tuple] = set()
    out = {}
    for name, tensor in weights.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out[name] = tensor
    return out


def truly_missing(model, missing: list[str]) -> list[str]:
    """The keys of `missing` that `unique_tensors` did not just drop as a second name of a saved tensor."""
    params = dict(model.named_parameters(remove_duplicate=False))

    def is_alias(name: str) -> bool:
        return name in params and any(other != name and p.data_ptr() == params[name].data_ptr() for other, p in params.items())

    return [name for name in missing if not is_alias(name)]


def write_checkpoint(model, tokenizer, directory: str | os.PathLike, extra_json: dict[str, dict] | None = None) -> None:
    """save_pretrained (safetensors) plus tokenizer, generation config and extra JSON files."""
    from prunekit.models.layer_widths import has_layer_widths, record_layer_widths

    directory = Path(directory)
    strip_gguf_quantizer(model)
    if has_layer_widths(model.config):
        record_layer_widths(model)  # blocks may have been removed since the widths were recorded
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    for name, payload in (extra_json or {}).items():
        (directory / name).write_text(json.dumps(payload, indent=2) + "\n")


def save_model(model, tokenizer, out: str | os.PathLike, *, overwrite: bool = False,
               extra_json: dict[str, dict] | None = None, protected: list[str | os.PathLike] = ()) -> Path:
    """Save a (pruned) model atomically to `out`; returns the final path."""
    out_path = check_output_dir(out, overwrite, protected)
    with atomic_output_dir(out_path) as tmp:
        write_checkpoint(model, tokenizer, tmp, extra_json)
    return out_path
