"""The per-layer library `prunekit fit` chooses from: each layer's variants, each scored alone against the dense model.

A variant of layer k is the dense model with only layer k changed: its KV groups narrowed, its FFN channels
narrowed (both with LIAR's least-squares reconstruction, from the dense model's own inputs to layer k), or the
block removed. Its score is the KL divergence (nats per token) of the model's next-token distribution from the
dense one on scoring windows, as Puzzletron scores its block library. Attention and FFN variants are scored
apart and their scores added: a layer keeps a KV count and a channel count, or is dropped.

Each finished layer is written at once to the library's directory (a rerun resumes there); a library is keyed by
the model's weights, the data's tokens and the settings, so a new budget re-solves from it in seconds.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from prunekit.engine.sequential import SequentialRunner
from prunekit.errors import PrunekitError
from prunekit.fingerprints import token_digest
from prunekit.jsonfiles import read_json_object, write_json_atomically
from prunekit.methods.liar.config import LiarConfig
from prunekit.methods.liar.decoder import LayerVariants
from prunekit.models.adapters import ModelAdapter
from prunekit.version import __version__

LIBRARY_FORMAT = 1
FFN_FRACTIONS = (0.75, 0.5, 0.25)  # FFN channels kept, before rounding to the channel multiple


@dataclass
class ModelShape:
    """What the costs need to know about the dense model."""

    num_layers: int
    hidden: int
    width: int  # FFN channels per layer
    num_kv: int  # KV groups per layer
    group_size: int  # query heads per KV group
    head_dim: int
    vocab: int
    tied: bool
    attention_bias_field: bool  # the family can hold an o_proj bias (LIAR's intercept)
    mlp_bias_field: bool
    layer_norm_params: int | None = None  # a layer's norm weights (None: two of the hidden width, as in Llama)

    @property
    def norms(self) -> int:
        return 2 * self.hidden if self.layer_norm_params is None else self.layer_norm_params

    @classmethod
    def of(cls, model) -> "ModelShape":
        adapter = ModelAdapter(model)
        config, family = model.config, adapter.family
        head_dim = getattr(adapter.layers[0], family.attention_attr).head_dim
        width = getattr(getattr(adapter.layers[0], family.mlp_attr), family.mlp_projections[-1]).in_features
        return cls(
            num_layers=adapter.num_blocks,
            hidden=config.hidden_size,
            width=width,
            num_kv=config.num_key_value_heads,
            group_size=config.num_attention_heads // config.num_key_value_heads,
            head_dim=head_dim,
            vocab=config.vocab_size,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
            attention_bias_field=family.attention_bias_field is not None,
            mlp_bias_field=family.mlp_bias_field is not None,
            # every vector but a bias: Gemma-3 has four norms and per-head query and key norms
            layer_norm_params=sum(p.numel() for n, p in adapter.layers[0].named_parameters() if p.dim() == 1 and not n.endswith("bias")),
        )


def channel_options(width: int, multiple: int, fractions: tuple[float, ...] = FFN_FRACTIONS) -> list[int]:
    """FFN widths a layer may keep: the fractions of `width`, rounded to `multiple`, distinct, below `width`."""
    out = {min(width - 1, max(multiple, multiple * round(f * width / multiple))) for f in fractions}
    return sorted((c for c in out if 0 < c < width), reverse=True)


def kv_options(num_kv: int) -> list[int]:
    """KV-group counts a layer may keep below the dense count (at most three, spread over the range)."""
    counts = list(range(num_kv - 1, 0, -1))
    if len(counts) > 3:
        counts = sorted({counts[0], counts[len(counts) // 2], counts[-1]}, reverse=True)
    return counts


@dataclass
class LayerEntry:
    """One layer's scores (KL, nats per token) by KV groups kept, by FFN channels kept, and for removing it."""

    index: int
    attention: dict[int, float]
    ffn: dict[int, float]
    drop: float
    seconds: float

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "attention": {str(k): v for k, v in self.attention.items()},
            "ffn": {str(k): v for k, v in self.ffn.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LayerEntry":
        return cls(
            index=int(data["index"]),
            attention={int(k): float(v) for k, v in data["attention"].items()},
            ffn={int(k): float(v) for k, v in data["ffn"].items()},
            drop=float(data["drop"]),
            seconds=float(data.get("seconds", 0.0)),
        )


@dataclass
class Library:
    shape: ModelShape
    channels: list[int]  # FFN widths offered (below the dense width)
    kv_groups: list[int]  # KV-group counts offered (below the dense count)
    layers: list[LayerEntry]
    settings: dict
    multiple: int = 1  # the offered FFN widths are multiples of it
    directory: Path | None = None
    seconds: float = 0.0
    resumed_layers: int = 0
    notes: list[str] = field(default_factory=list)


def model_fingerprint(model) -> str:
    """A digest of every parameter's shape and a strided sample of its values: two different checkpoints differ."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def library_key(model, calibration, scoring, settings: dict) -> str:
    payload = json.dumps(
        {
            "format": LIBRARY_FORMAT,
            "model": model_fingerprint(model),
            "calibration": token_digest(calibration.input_ids),
            "scoring": token_digest(scoring.input_ids),
            "settings": settings,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _kl_per_token(logits: torch.Tensor, reference: torch.Tensor) -> tuple[float, int]:
    """(sum over tokens of KL(reference || logits' distribution), tokens); `reference` holds log-probabilities."""
    logp = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])
    ref = reference.float().reshape(-1, logits.shape[-1])
    kl = (ref.exp() * (ref - logp)).sum(-1)
    return float(kl.sum()), kl.numel()


class _Scorer:
    """KL of the model from the dense one, running only the blocks from the changed one on."""

    def __init__(self, runner: SequentialRunner, inputs, reference: list[torch.Tensor]):
        self.runner, self.inputs, self.reference = runner, inputs, reference

    @torch.no_grad()
    def score(self, start: int, hidden: list[torch.Tensor], num_layers: int) -> float:
        for index in range(start, num_layers):
            hidden = self.runner.run_block(index, hidden, self.inputs.block_kwargs)
        total, count = 0.0, 0
        for batch_hidden, reference in zip(hidden, self.reference):
            kl, tokens = _kl_per_token(self.runner.logits(batch_hidden), reference)
            total, count = total + kl, count + tokens
        return max(0.0, total / count)


def _read_entries(directory: Path, settings: dict, num_layers: int) -> dict[int, LayerEntry]:
    header = directory / "library.json"
    if not header.is_file():
        return {}
    recorded = read_json_object(header, "fit library")
    if recorded.get("settings") != settings:
        raise PrunekitError(f"fit library {directory} was built with other settings; pass another --library or remove it")
    out = {}
    for index in range(num_layers):
        path = directory / f"layer-{index:03d}.json"
        if path.is_file():
            out[index] = LayerEntry.from_dict(read_json_object(path, "fit library layer"))
    return out


def build_library(
    model,
    calibration,
    scoring,
    directory: str | Path,
    *,
    liar: LiarConfig | None = None,
    channel_multiple: int = 1,
    heads: bool = True,
    batch_size: int = 1,
    progress: bool = True,
) -> Library:
    """Score every layer's variants (resuming from `directory`, where each finished layer is written). Without
    `heads`, no layer narrows its KV groups (for families whose llama.cpp form cannot hold pruned heads)."""
    liar = liar or LiarConfig(ratio=0.5)  # only the criterion, reconstruction, damping and seed are read
    shape = ModelShape.of(model)
    channels = channel_options(shape.width, channel_multiple)
    kv_groups = kv_options(shape.num_kv) if heads else []
    settings = {
        "format": LIBRARY_FORMAT,
        "prunekit": __version__.split("+")[0],
        "channels": channels,
        "kv_groups": kv_groups,
        "criterion": liar.criterion,
        "reconstruction": liar.reconstruction,
        "damping": liar.damping,
        "seed": liar.seed,
        "calibration": token_digest(calibration.input_ids),
        "scoring": token_digest(scoring.input_ids),
        "model": model_fingerprint(model),
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    done = _read_entries(directory, settings, shape.num_layers)
    write_json_atomically(directory / "library.json", {"settings": settings, "shape": asdict(shape)})
    started = time.perf_counter()
    model.eval()
    runner = SequentialRunner(model, batch_size=batch_size, progress=False)
    calib_inputs = runner.capture(calibration.input_ids)
    score_inputs = runner.capture(scoring.input_ids)
    adapter = ModelAdapter(model)
    with torch.no_grad():
        dense_final = runner.run_blocks(score_inputs, range(shape.num_layers))
        reference = [torch.log_softmax(runner.logits(h).float(), dim=-1).to(torch.bfloat16) for h in dense_final]
    del dense_final
    scorer = _Scorer(runner, score_inputs, reference)
    variants = LayerVariants(model, runner, calib_inputs, liar)
    hidden_calib, hidden_score = calib_inputs.hidden, score_inputs.hidden
    layers = []
    todo = [i for i in range(shape.num_layers) if i not in done]
    bar = tqdm(total=len(todo), desc="fit: scoring each layer's variants", disable=not progress, leave=False)
    for index in range(shape.num_layers):
        if index in done:
            layers.append(done[index])
        else:
            layers.append(_score_layer(index, adapter, variants, scorer, hidden_calib, hidden_score, kv_groups, channels, shape))
            write_json_atomically(directory / f"layer-{index:03d}.json", layers[-1].to_dict())
            bar.update(1)
        if index + 1 < shape.num_layers and any(i not in done for i in range(index + 1, shape.num_layers)):
            hidden_calib = runner.run_block(index, hidden_calib, calib_inputs.block_kwargs)
            hidden_score = runner.run_block(index, hidden_score, score_inputs.block_kwargs)
    bar.close()
    return Library(
        shape,
        channels,
        kv_groups,
        layers,
        settings,
        multiple=channel_multiple,
        directory=directory,
        seconds=time.perf_counter() - started + sum(layer.seconds for layer in done.values()),
        resumed_layers=len(done),
    )


def _score_layer(
    index, adapter, variants: LayerVariants, scorer: _Scorer, hidden_calib, hidden_score, kv_groups, channels, shape
) -> LayerEntry:
    started = time.perf_counter()
    original = adapter.layers[index]

    def scored(variant) -> float:
        adapter.layers[index] = variant
        try:
            return scorer.score(index, hidden_score, shape.num_layers)
        finally:
            adapter.layers[index] = original

    attention = {kv: scored(layer) for kv, layer in variants.attention_variants(index, hidden_calib, kv_groups).items()}
    ffn = {c: scored(layer) for c, layer in variants.ffn_variants(index, hidden_calib, channels).items()}
    drop = scorer.score(index + 1, hidden_score, shape.num_layers)  # the block's input goes straight on
    return LayerEntry(index, attention, ffn, drop, time.perf_counter() - started)


def load_library(directory: str | Path) -> dict | None:
    """The settings a library directory was built with, or None where there is none."""
    path = Path(directory) / "library.json"
    return read_json_object(path, "fit library") if path.is_file() else None
