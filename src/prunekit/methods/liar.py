"""LIAR (Wang et al., 2025): retraining-free width pruning with least-squares reconstruction.

This module prunes attention heads (whole GQA groups) and FFN intermediate channels block by block on the sequential engine: the
statistics of block k's down_proj inputs are taken from the outputs of the already-pruned blocks
0..k-1, the channels are ranked by a criterion, the pruned channels' contribution is folded into
down_proj (see `reconstruction.py`), and the pruned block's outputs feed block k+1. Memory holds
one block's Gram matrix, never all activations.

The ratio is uniform across layers, so the result is a standard config (`intermediate_size`) that
plain `AutoModelForCausalLM.from_pretrained` loads; an added down_proj bias is exported through
`mlp_bias` only in families whose config has it (Llama), where zero gate/up biases keep it exact.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.engine.sequential import SequentialRunner
from prunekit.errors import PrunekitError
from prunekit.methods.reconstruction import RECONSTRUCTIONS, fold_pruned_inputs, output_error
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.scoring.channels import InputStatistics, check_criterion, ffn_channel_scores

# Families whose config can switch on an MLP bias (on gate, up and down projections alike).
MLP_BIAS_FIELD = {"llama": "mlp_bias"}
# Families whose config can switch on a bias for q, k, v and o projections alike.
ATTENTION_BIAS_FIELD = {name: "attention_bias" for name in ("llama", "qwen3", "gemma", "gemma2", "gemma3_text")}
# Families whose attention reads head counts from the shared config at run time (fused qkv split):
# pruning their heads block by block needs per-block configs, not done yet.
HEAD_PRUNING_UNSUPPORTED = ("phi3",)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=like.weight.device, dtype=like.weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _producer_rows(name: str, keep: torch.Tensor, width: int) -> torch.Tensor:
    """Rows of a projection that writes the kept channels (fused gate_up holds gate then up)."""
    return torch.cat([keep, keep + width]) if name == "gate_up_proj" else keep


def slice_mlp(mlp: nn.Module, producers: list[str], consumer: str, keep: torch.Tensor, new_down: torch.Tensor,
              added_bias: torch.Tensor | None, use_bias: bool) -> None:
    """Keep `keep` intermediate channels; install the folded down_proj (and biases when used)."""
    width = getattr(mlp, consumer).in_features
    for name in producers:
        old = getattr(mlp, name)
        rows = _producer_rows(name, keep, width)
        bias = old.bias[rows] if old.bias is not None else (torch.zeros(rows.numel(), dtype=old.weight.dtype) if use_bias else None)
        setattr(mlp, name, _linear(old.weight[rows], bias, old))
    _install_consumer(mlp, consumer, new_down, added_bias, use_bias)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = keep.numel()


def _kept_heads(scores: torch.Tensor, num_heads: int, num_kv: int, head_dim: int, keep_groups: int):
    """Keep whole GQA groups (a KV head and its query heads): channel and KV-row indices to keep."""
    per_group = num_heads // num_kv
    group_scores = scores.view(num_kv, per_group * head_dim).sum(1)
    groups = torch.topk(group_scores, keep_groups).indices.sort().values
    channels = torch.cat([torch.arange(g * per_group * head_dim, (g + 1) * per_group * head_dim) for g in groups.tolist()])
    kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups.tolist()])
    return groups, channels, kv_rows


def slice_attention(attention: nn.Module, q_rows: torch.Tensor, kv_rows: torch.Tensor, new_o: torch.Tensor,
                    added_bias: torch.Tensor | None, use_bias: bool) -> None:
    """Keep the given query channels and KV rows; install the folded o_proj (and biases when used)."""
    for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
        old = getattr(attention, name)
        bias = old.bias[rows] if old.bias is not None else (torch.zeros(rows.numel(), dtype=old.weight.dtype) if use_bias else None)
        setattr(attention, name, _linear(old.weight[rows], bias, old))
    _install_consumer(attention, "o_proj", new_o, added_bias, use_bias)


def _install_consumer(module: nn.Module, name: str, weight: torch.Tensor, added_bias: torch.Tensor | None, use_bias: bool) -> None:
    old = getattr(module, name)
    bias = old.bias.detach().double().cpu() if old.bias is not None else None
    if added_bias is not None:
        bias = added_bias if bias is None else bias + added_bias
    if use_bias and bias is None:
        bias = torch.zeros(old.out_features, dtype=torch.float64)
    setattr(module, name, _linear(weight.to(old.weight.dtype), bias.to(old.weight.dtype) if bias is not None else None, old))


def _input_statistics(runner: SequentialRunner, index: int, hidden, block_kwargs, module: nn.Module, width: int) -> InputStatistics:
    """Run block `index` once, streaming the statistics of `module`'s inputs."""
    stats = InputStatistics(width)
    handle = module.register_forward_pre_hook(lambda mod, args: stats.add(args[0]))
    try:
        runner.run_block(index, hidden, block_kwargs)
    finally:
        handle.remove()
    return stats


def _check_finite(folded, index: int, what: str) -> None:
    if not torch.isfinite(folded.weight).all() or (folded.bias is not None and not torch.isfinite(folded.bias).all()):
        raise PrunekitError(f"reconstruction of block {index} ({what}) produced non-finite weights; raise --damping or use --reconstruction bias")


def check_width_options(ffn_ratio: float | None, head_ratio: float | None, criterion: str, reconstruction: str,
                        ratio: float | None = None) -> None:
    """The checks that need no model, so the CLI can fail before loading one."""
    if ratio is not None:
        if ffn_ratio is not None or head_ratio not in (None, 0.0):
            raise PrunekitError("give --ratio (share of the block parameters) or --ffn-ratio/--head-ratio, not both "
                                "(--head-ratio 0 with --ratio keeps every head)")
        if not 0.0 < ratio < 1.0:
            raise PrunekitError(f"--ratio {ratio} must be strictly between 0 and 1")
    elif ffn_ratio is None and head_ratio is None:
        raise PrunekitError("--method liar needs --ratio R, or --ffn-ratio R and/or --head-ratio R (fractions to remove, in [0, 1))")
    for flag, ratio in (("--ffn-ratio", ffn_ratio), ("--head-ratio", head_ratio)):
        if ratio is not None and not 0.0 <= ratio < 1.0:
            raise PrunekitError(f"{flag} {ratio} must be in [0, 1)")
    check_criterion(criterion)
    if reconstruction not in RECONSTRUCTIONS:
        raise PrunekitError(f"unknown reconstruction '{reconstruction}'; choose one of {', '.join(RECONSTRUCTIONS)}")


def split_block_ratio(model, ratio: float, heads: bool = True) -> tuple[float, float]:
    """(head_ratio, ffn_ratio) that remove `ratio` of every decoder block's parameters.

    Whole KV groups are coarse, so heads take at most round(ratio * groups) groups and never more
    parameters than the target; FFN channels make up the rest. `heads=False` (or a family whose
    heads cannot be pruned) puts everything on the FFN channels.
    """
    if not 0.0 < ratio < 1.0:
        raise PrunekitError(f"--ratio {ratio} must be strictly between 0 and 1")
    adapter = ModelAdapter(model)
    config, family = adapter.config, adapter.family
    hidden = config.hidden_size
    block = adapter.block_parameter_count(0)
    target = ratio * block
    num_heads, num_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(adapter.layers[0], family.attention_attr).head_dim
    per_group = hidden * head_dim * (2 * (num_heads // num_kv) + 2)
    groups = 0
    if heads and config.model_type not in HEAD_PRUNING_UNSUPPORTED:
        groups = min(round(ratio * num_kv), num_kv - 1)
        while groups > 0 and groups * per_group > target:
            groups -= 1
    width = getattr(getattr(adapter.layers[0], family.mlp_attr), family.mlp_projections[-1]).in_features
    per_channel = 3 * hidden
    channels = round((target - groups * per_group) / per_channel)
    if channels >= width:
        raise PrunekitError(f"--ratio {ratio} would remove every FFN channel ({width} per block); use a smaller ratio")
    return groups / num_kv, channels / width


def prune_width(model, windows, *, ffn_ratio: float = 0.0, head_ratio: float = 0.0, criterion: str = "wanda",
                reconstruction: str = "liar", damping: float = 1e-4, device=None, offload: bool = False,
                batch_size: int = 1, progress: bool = True, seed: int = 0) -> dict:
    """Prune `head_ratio` of every block's KV groups (whole GQA groups) and `ffn_ratio` of its FFN
    channels, in place and block by block; returns the plan (JSON-able)."""
    check_width_options(ffn_ratio, head_ratio, criterion, reconstruction)
    adapter = ModelAdapter(model)
    family, config = adapter.family, adapter.config
    model_type = config.model_type
    *producers, consumer = family.mlp_projections
    width = getattr(getattr(adapter.layers[0], family.mlp_attr), consumer).in_features
    n_keep = width - int(round(ffn_ratio * width))
    if n_keep < 1:
        raise PrunekitError(f"--ffn-ratio {ffn_ratio} would remove every FFN channel; use a smaller ratio")
    num_heads, num_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(getattr(adapter.layers[0], family.attention_attr), "head_dim")
    keep_groups = num_kv - int(round(head_ratio * num_kv))
    if head_ratio > 0:
        if model_type in HEAD_PRUNING_UNSUPPORTED:
            raise PrunekitError(f"head pruning is not supported for {model_type} yet (fused qkv); use --ffn-ratio only")
        if keep_groups < 1:
            raise PrunekitError(f"--head-ratio {head_ratio} would remove every KV group of a layer ({num_kv} per layer); use a smaller ratio")
    mlp_field = MLP_BIAS_FIELD.get(model_type)
    attn_field = ATTENTION_BIAS_FIELD.get(model_type)
    wants_bias = reconstruction in ("bias", "liar")
    use_mlp_bias = ffn_ratio > 0 and mlp_field is not None and (wants_bias or getattr(config, mlp_field, False))
    use_attn_bias = head_ratio > 0 and attn_field is not None and (wants_bias or getattr(config, attn_field, False))
    started = time.perf_counter()
    params_before = parameter_count(model)
    runner = SequentialRunner(model, device=device, offload=offload, batch_size=batch_size, progress=False)
    inputs = runner.capture(windows.input_ids)
    hidden = inputs.hidden
    layers_plan = []
    for index in tqdm(range(adapter.num_blocks), desc=f"liar {criterion}/{reconstruction}", disable=not progress, leave=False):
        layer = adapter.layers[index]
        entry = {"block": index}
        if head_ratio > 0:
            attention = getattr(layer, family.attention_attr)
            o_proj = attention.o_proj
            stats = _input_statistics(runner, index, hidden, inputs.block_kwargs, o_proj, o_proj.in_features)
            scores = ffn_channel_scores(criterion, stats, o_proj.weight, [attention.q_proj.weight], seed=seed + 1000 + index)
            groups, channels, kv_rows = _kept_heads(scores, num_heads, num_kv, head_dim, keep_groups)
            folded = fold_pruned_inputs(o_proj.weight, channels, stats, reconstruction, with_bias=use_attn_bias, damping=damping)
            _check_finite(folded, index, "attention")
            entry.update(kept_kv_groups=groups.tolist(), o_proj_output_mse=output_error(o_proj.weight, channels, folded, stats))
            slice_attention(attention, channels, kv_rows, folded.weight, folded.bias, use_attn_bias)
        if ffn_ratio > 0:
            mlp = getattr(layer, family.mlp_attr)
            down = getattr(mlp, consumer)
            stats = _input_statistics(runner, index, hidden, inputs.block_kwargs, down, width)
            producer_weights = [getattr(mlp, name).weight for name in producers]
            if producers == ["gate_up_proj"]:
                producer_weights = list(producer_weights[0].split(width, dim=0))
            scores = ffn_channel_scores(criterion, stats, down.weight, producer_weights, seed=seed + index)
            keep = torch.topk(scores, n_keep).indices.sort().values
            folded = fold_pruned_inputs(down.weight, keep, stats, reconstruction, with_bias=use_mlp_bias, damping=damping)
            _check_finite(folded, index, "FFN")
            entry.update(kept_channels=keep.tolist(), output_mse=output_error(down.weight, keep, folded, stats), damping=folded.damping)
            slice_mlp(mlp, producers, consumer, keep, folded.weight, folded.bias, use_mlp_bias)
        layers_plan.append(entry)
        hidden = runner.run_block(index, hidden, inputs.block_kwargs)
    if ffn_ratio > 0:
        config.intermediate_size = n_keep
    if use_mlp_bias:
        setattr(config, mlp_field, True)
    if head_ratio > 0:
        config.head_dim = head_dim
        config.num_key_value_heads = keep_groups
        config.num_attention_heads = keep_groups * (num_heads // num_kv)
    if use_attn_bias:
        setattr(config, attn_field, True)
    return {
        "method": "liar", "criterion": criterion, "reconstruction": reconstruction, "ffn_ratio": ffn_ratio,
        "head_ratio": head_ratio, "intermediate_size_before": width, "intermediate_size_after": n_keep,
        "kv_heads_before": num_kv, "kv_heads_after": keep_groups, "mlp_bias": use_mlp_bias, "attention_bias": use_attn_bias,
        "params_before": params_before, "params_after": parameter_count(model), "data": windows.summary(),
        "seconds": time.perf_counter() - started, "layers": layers_plan,
    }


def prune_ffn_channels(model, windows, *, ffn_ratio: float, **options) -> dict:
    """FFN channels only (see prune_width)."""
    return prune_width(model, windows, ffn_ratio=ffn_ratio, **options)
