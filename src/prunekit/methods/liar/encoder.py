"""LIAR width pruning for BERT-style encoders: the decoder machinery on an encoder's blocks.

Heads (no GQA: every head is its own group) and FFN channels are ranked by the same criteria, the
pruned inputs of the attention output projection and of the FFN output projection are folded in by
the same least-squares or bias reconstruction, and blocks are processed sequentially so block k's
statistics come from the already-pruned blocks 0..k-1. Both consuming projections already carry a
bias in BERT, so every reconstruction is exact in the saved checkpoint. Widths are uniform across
layers; the gradient (taylor) criterion needs a language-model loss and is refused here.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from prunekit.data.windows import TokenWindows
from prunekit.engine.sequential import SequentialRunner
from prunekit.errors import ParameterError, PrunekitError
from prunekit.methods.liar.config import LiarConfig
from prunekit.methods.liar.decoder import check_finite, holdout_for, input_statistics, kept_heads
from prunekit.methods.liar.reconstruction import fold_pruned_inputs
from prunekit.models.adapters import parameter_count
from prunekit.models.encoders import EncoderAdapter, record_encoder_widths
from prunekit.models.width_surgery import install_consumer, linear_like
from prunekit.scoring.channels import channel_criterion, channel_criterion_names, channel_scores


def encoder_windows(windows: TokenWindows, tokenizer) -> TokenWindows:
    """Wrap plain token windows in the encoder's [CLS] ... [SEP] so every block sees real inputs."""
    ids = windows.input_ids
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls is None or sep is None:
        return windows
    rows = ids.shape[0]
    wrapped = torch.cat([torch.full((rows, 1), cls), ids, torch.full((rows, 1), sep)], 1)
    return TokenWindows(wrapped, windows.description, windows.total_tokens_available)


def _slice_rows(adapter: EncoderAdapter, index: int, path: str, rows: torch.Tensor) -> None:
    old = adapter.unit(index, path)
    adapter.replace(index, path, linear_like(old.weight[rows], old.bias[rows] if old.bias is not None else None, old))


def _install_folded(adapter: EncoderAdapter, index: int, path: str, folded) -> None:
    parent, name = path.rsplit(".", 1)
    install_consumer(adapter.unit(index, parent), name, folded.weight, folded.bias, use_bias=True)


def prune_encoder_width(
    model,
    windows: TokenWindows,
    config: LiarConfig | None = None,
    *,
    device=None,
    batch_size: int = 1,
    progress: bool = True,
    **options,
) -> dict:
    """Remove a share of every block's heads and FFN channels, in place: `ratio` of both, or `head_ratio` of the heads
    and `ffn_ratio` of the channels (a LiarConfig, or its fields as keyword options; uniform widths only)."""
    if config is None:
        config = LiarConfig(**{"head_ratio": 0.0, "ffn_ratio": 0.0, **options})
        config.check()
    elif options:
        raise ParameterError("config", f"is given, so {', '.join(sorted(options))} belong in it")
    if config.allocation != "uniform":
        raise ParameterError("allocation", "must be uniform for encoders (per-layer FFN widths are not supported for them yet)")
    head_ratio = config.ratio if config.ratio is not None else (config.head_ratio or 0.0)
    ffn_ratio = config.ratio if config.ratio is not None else (config.ffn_ratio or 0.0)
    criterion, reconstruction, damping, seed = config.criterion, config.reconstruction, config.damping, config.seed
    if channel_criterion(criterion).uses_gradients:
        usable = [name for name in channel_criterion_names() if not channel_criterion(name).uses_gradients]
        raise PrunekitError(f"the {criterion} criterion needs a language-model loss; encoders take {', '.join(usable)}")
    holdout = holdout_for(reconstruction, damping)
    adapter = EncoderAdapter(model)
    family = adapter.family
    num_heads = adapter.num_heads(0)
    keep_heads = num_heads - int(round(head_ratio * num_heads))
    if keep_heads < 1:
        raise ParameterError("head_ratio", f"{head_ratio} would remove every head of a layer ({num_heads} per layer); use a smaller ratio")
    width = adapter.unit(0, family.ffn_output).in_features
    keep_channels = width - int(round(ffn_ratio * width))
    if keep_channels < 1:
        raise ParameterError("ffn_ratio", f"{ffn_ratio} would remove every FFN channel; use a smaller ratio")
    started = time.perf_counter()
    params_before = parameter_count(model)
    runner = SequentialRunner(model, device=device, batch_size=batch_size, progress=False, adapter=adapter)
    inputs = runner.capture(windows.input_ids)
    hidden = inputs.hidden
    layers = []
    for index in tqdm(range(adapter.num_blocks), desc=f"liar encoder {criterion}/{reconstruction}", disable=not progress, leave=False):
        entry = {"block": index}
        pruning = {"criterion": criterion, "reconstruction": reconstruction, "damping": damping, "holdout": holdout, "seed": seed}
        if keep_heads < num_heads:
            entry.update(_prune_heads(adapter, runner, inputs, index, hidden, keep_heads, **pruning))
        if keep_channels < width:
            entry.update(_prune_channels(adapter, runner, inputs, index, hidden, keep_channels, **pruning))
        layers.append(entry)
        hidden = runner.run_block(index, hidden, inputs.block_kwargs)
    needs_loader = record_encoder_widths(model)
    return {
        "method": "liar",
        "model_kind": "encoder",
        "criterion": criterion,
        "reconstruction": reconstruction,
        "head_ratio": head_ratio,
        "ffn_ratio": ffn_ratio,
        "heads_before": num_heads,
        "heads_after": keep_heads,
        "intermediate_size_before": width,
        "intermediate_size_after": keep_channels,
        "per_layer_widths": needs_loader,
        "params_before": params_before,
        "params_after": parameter_count(model),
        "data": windows.summary(),
        "seconds": time.perf_counter() - started,
        "layers": layers,
    }


def _prune_heads(
    adapter, runner, inputs, index: int, hidden, keep_heads: int, *, criterion, reconstruction, damping, holdout, seed
) -> dict:
    """Keep `keep_heads` heads of block `index`, folding the others' contribution into the attention output."""
    family, head_size, num_heads = adapter.family, adapter.head_size(), adapter.num_heads(index)
    consumer = adapter.unit(index, family.attention_output)
    stats = input_statistics(runner, index, hidden, inputs.block_kwargs, consumer, consumer.in_features, holdout)
    scores = channel_scores(criterion, stats, consumer.weight, [adapter.unit(index, family.query).weight], seed=seed + 1000 + index)
    heads, channels, _ = kept_heads(scores, num_heads, num_heads, head_size, keep_heads)
    folded = fold_pruned_inputs(consumer.weight, channels, stats, reconstruction, with_bias=True, damping=damping)
    check_finite(folded, index, "attention")
    for path in (family.query, family.key, family.value):
        _slice_rows(adapter, index, path, channels)
    _install_folded(adapter, index, family.attention_output, folded)
    attention = adapter.unit(index, family.self_attention)
    attention.num_attention_heads, attention.all_head_size = keep_heads, keep_heads * head_size
    return {"kept_heads": heads.tolist(), "attention_output_mse": folded.output_error, "attention_damping": folded.damping}


def _prune_channels(adapter, runner, inputs, index: int, hidden, keep: int, *, criterion, reconstruction, damping, holdout, seed) -> dict:
    """Keep `keep` FFN channels of block `index`, folding the others' contribution into the FFN output."""
    family = adapter.family
    consumer = adapter.unit(index, family.ffn_output)
    stats = input_statistics(runner, index, hidden, inputs.block_kwargs, consumer, consumer.in_features, holdout)
    scores = channel_scores(criterion, stats, consumer.weight, [adapter.unit(index, family.ffn_input).weight], seed=seed + index)
    kept = torch.topk(scores, keep).indices.sort().values
    folded = fold_pruned_inputs(consumer.weight, kept, stats, reconstruction, with_bias=True, damping=damping)
    check_finite(folded, index, "FFN")
    _slice_rows(adapter, index, family.ffn_input, kept)
    _install_folded(adapter, index, family.ffn_output, folded)
    return {"kept_channels": kept.tolist(), "output_mse": folded.output_error, "damping": folded.damping}


def run_encoder_liar(model, config, context) -> dict:
    """LiarConfig on an encoder: uniform widths only; `ratio` removes that share of heads and FFN channels."""
    windows = context.require_windows("liar", config.windows)
    if context.tokenizer is not None:
        windows = encoder_windows(windows, context.tokenizer)
    return prune_encoder_width(model, windows, config, device=context.device, batch_size=context.batch_size, progress=context.progress)
