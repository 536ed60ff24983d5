"""LIAR (Wang et al., 2025): retraining-free width pruning with least-squares reconstruction.

This module prunes attention heads (whole GQA groups) and FFN intermediate channels block by block on the sequential engine: the
statistics of block k's down_proj inputs are taken from the outputs of the already-pruned blocks
0..k-1, the channels are ranked by a criterion, the pruned channels' contribution is folded into
down_proj (see `reconstruction.py`), and the pruned block's outputs feed block k+1. Memory holds
one block's Gram matrix, never all activations.

With uniform widths the result is a standard config (`intermediate_size`, head counts) that plain
`AutoModelForCausalLM.from_pretrained` loads; adaptive widths (`width_allocation.py`) differ per
layer, which no standard config can say, so they are saved as per-layer sizes and reloaded with
`prunekit.load_model` (`models/layer_widths.py`). An added o_proj/down_proj bias is exported
through `attention_bias`/`mlp_bias` only in families whose config has it, where zero biases on the
other projections keep it exact. Which projections and switches a family has is the family table's
business (`models/adapters.py`); the slicing itself is `models/width_surgery.py`.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.engine.sequential import SequentialRunner
from prunekit.errors import ComputationError, ParameterError, PrunekitError
from prunekit.evaluation.speed import peak_rss_bytes, weight_bytes
from prunekit.methods.liar.allocation import LISTED, LayerWidth, adaptive_widths, listed_widths, standardised, uniform_widths
from prunekit.methods.liar.config import AUTO_MULTIPLE, AUTO_MULTIPLE_MIN_WIDTH, AUTO_MULTIPLE_VALUE, LiarConfig
from prunekit.methods.liar.reconstruction import HOLDOUT_EVERY, fold_pruned_inputs
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.layer_widths import record_layer_widths
from prunekit.models.loading import available_memory_bytes
from prunekit.models.width_surgery import (
    attention_consumer,
    mlp_consumer,
    producer_weights,
    query_weight,
    share_attention_config,
    slice_attention,
    slice_mlp,
)
from prunekit.scoring.channels import InputStatistics, channel_criterion, channel_scores, statistics_peak_bytes
from prunekit.scoring.gradients import taylor_unit_scores


def kept_heads(scores: torch.Tensor, num_heads: int, num_kv: int, head_dim: int, keep_groups: int):
    """Keep whole GQA groups (a KV head and its query heads): channel and KV-row indices to keep."""
    per_group = num_heads // num_kv
    group_scores = scores.view(num_kv, per_group * head_dim).sum(1)
    groups = torch.topk(group_scores, keep_groups).indices.sort().values
    channels = torch.cat([torch.arange(g * per_group * head_dim, (g + 1) * per_group * head_dim) for g in groups.tolist()])
    kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups.tolist()])
    return groups, channels, kv_rows


def input_statistics(
    runner: SequentialRunner,
    index: int,
    hidden,
    block_kwargs,
    module: nn.Module,
    width: int,
    holdout_every: int = 0,
    idle: nn.Module | None = None,
) -> InputStatistics:
    """Run block `index` once, streaming the statistics of `module`'s inputs (on the block's device).
    The run's output is thrown away, so `idle` (e.g. the MLP after the attention) does not compute."""
    stats = InputStatistics(width, holdout_every)
    handle = module.register_forward_pre_hook(lambda mod, args: stats.add(args[0]))
    try:
        with _computes_nothing(idle) if idle is not None else nullcontext():
            runner.run_block(index, hidden, block_kwargs)
    finally:
        handle.remove()
    return stats


def _keeps_down_inputs(device: torch.device) -> bool:
    return device.type == "cpu"


@contextmanager
def _computes_nothing(linear: nn.Module) -> Iterator[None]:
    """`linear` returns zeros of its output shape instead of multiplying (its pre-hooks still see the
    inputs). For a pass whose block output is thrown away: down_proj is the block's largest matmul.
    A module without a weight of its own (a whole MLP) maps to its input's width."""
    own = linear.__dict__.get("forward")  # a wrapper put there by accelerate's hooks, kept as it was
    weight = linear._parameters.get("weight")  # its own, not a submodule's
    out_features = getattr(linear, "out_features", None) or (weight.shape[0] if weight is not None else None)
    linear.forward = lambda x, *args, **kwargs: x.new_zeros(*x.shape[:-1], out_features or x.shape[-1])
    try:
        yield
    finally:
        if own is not None:
            linear.forward = own
        else:
            del linear.forward


class _FfnPass:
    """One run of a block that streams its FFN statistics and keeps what recomputing the block's
    output after its FFN is pruned needs: the residual entering the MLP and the MLP's input.
    The run's own output is never used (the pruned block's output is recomputed, or the pruned block
    rerun), so its down_proj does not multiply: a fifth of a SmolLM2 block's flops.

    A pruned block then ends in residual + post(mlp'(x)), without a second run of its attention;
    `_matches_a_real_run` checks this against a real run once per model. On the CPU the down_proj
    inputs are kept instead and only down' runs again (fewer flops, more memory); on an
    accelerator the hidden-wide MLP input is kept (less memory, and the flops are cheap there)."""

    def __init__(self, runner: SequentialRunner, adapter: ModelAdapter, index: int, width: int, holdout: int):
        self.runner, self.adapter, self.index = runner, adapter, index
        family, layer = adapter.family, adapter.layers[index]
        self.mlp = getattr(layer, family.mlp_attr)
        self.family = family
        self.norm = getattr(layer, family.mlp_norm_attr, None)
        self.post = getattr(layer, family.mlp_post_norm_attr) if family.mlp_post_norm_attr else None
        self.keeps_down_inputs = _keeps_down_inputs(runner.device)
        self.stats = InputStatistics(width, holdout)
        self.residuals: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []

    @property
    def can_recompute(self) -> bool:
        return self.norm is not None

    def run(self, hidden, block_kwargs, keep_inputs: bool) -> None:
        storage = self.runner.storage_device
        keep_down = keep_inputs and self.keeps_down_inputs

        def on_down(module, args):
            self.stats.add(args[0])
            if keep_down:
                self.inputs.append(args[0].detach().to(storage))

        hooks = [mlp_consumer(self.mlp, self.family).register_forward_pre_hook(on_down)]
        if keep_inputs:
            hooks.append(self.norm.register_forward_pre_hook(lambda module, args: self.residuals.append(args[0].detach().to(storage))))
        if keep_inputs and not keep_down:
            hooks.append(self.mlp.register_forward_pre_hook(lambda module, args: self.inputs.append(args[0].detach().to(storage))))
        try:
            with _computes_nothing(mlp_consumer(self.mlp, self.family)):
                self.runner.run_block(self.index, hidden, block_kwargs)
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def pruned_outputs(self, keep: torch.Tensor) -> list[torch.Tensor]:
        """The pruned block's outputs: residual + post(mlp'(x)) (or down'(z_kept) for the MLP on the CPU)."""
        device, storage = self.runner.device, self.runner.storage_device
        keep = keep.to(device)
        outputs = []
        with self.runner.block_on_device(self.index):
            down = mlp_consumer(self.mlp, self.family)  # the pruned one
            for residual, inputs in zip(self.residuals, self.inputs):
                inputs = inputs.to(device)
                out = down(inputs.index_select(-1, keep)) if self.keeps_down_inputs else self.mlp(inputs)
                if self.post is not None:
                    out = self.post(out)
                outputs.append((residual.to(device) + out).to(storage))
        return outputs


def _matches_a_real_run(runner: SequentialRunner, index: int, hidden, block_kwargs, recomputed: torch.Tensor) -> bool:
    """Whether the recomputed output of the first batch is what running the pruned block gives."""
    real = runner.run_block(index, hidden[:1], block_kwargs[:1])[0].float()
    tolerance = 3e-2 if recomputed.dtype in (torch.bfloat16, torch.float16) else 1e-4
    error = (recomputed.float() - real).norm() / real.norm().clamp_min(1e-12)
    return bool(error <= tolerance)


def check_finite(folded, index: int, what: str) -> None:
    if not torch.isfinite(folded.weight).all() or (folded.bias is not None and not torch.isfinite(folded.bias).all()):
        raise ComputationError(
            f"reconstruction of block {index} ({what}) produced non-finite weights; raise `damping` or use `reconstruction` bias"
        )


def resolve_channel_multiple(channel_multiple: int | str, width: int) -> int:
    """The multiple kept FFN channels are rounded to: `auto` is 64 where the FFN is at least 1,024 wide, else 1."""
    if channel_multiple == AUTO_MULTIPLE:
        return AUTO_MULTIPLE_VALUE if width >= AUTO_MULTIPLE_MIN_WIDTH else 1
    return int(channel_multiple)


def holdout_for(reconstruction: str, damping) -> int:
    """Every how many calibration batches one is held out (only to choose the damping)."""
    return HOLDOUT_EVERY if reconstruction == "liar" and damping == "auto" else 0


def split_block_ratio(model, ratio: float, heads: bool = True) -> tuple[float, float]:
    """(head_ratio, ffn_ratio) that remove `ratio` of every decoder block's parameters.

    Whole KV groups are coarse, so heads take at most round(ratio * groups) groups and never more
    parameters than the target; FFN channels make up the rest. `heads=False` puts everything on
    the FFN channels.
    """
    if not 0.0 < ratio < 1.0:
        raise ParameterError("ratio", f"{ratio} must be strictly between 0 and 1")
    adapter = ModelAdapter(model)
    config, family = adapter.config, adapter.family
    hidden = config.hidden_size
    block = adapter.block_parameter_count(0)
    target = ratio * block
    num_heads, num_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(adapter.layers[0], family.attention_attr).head_dim
    per_group = hidden * head_dim * (2 * (num_heads // num_kv) + 2)
    groups = 0
    if heads:
        groups = min(round(ratio * num_kv), num_kv - 1)
        while groups > 0 and groups * per_group > target:
            groups -= 1
    width = getattr(getattr(adapter.layers[0], family.mlp_attr), family.mlp_projections[-1]).in_features
    per_channel = 3 * hidden
    channels = round((target - groups * per_group) / per_channel)
    if channels >= width:
        raise ParameterError("ratio", f"{ratio} would remove every FFN channel ({width} per block); use a smaller ratio")
    return groups / num_kv, channels / width


@dataclass
class _Shape:
    """What prune_width needs to know about the model's width units."""

    width: int
    num_heads: int
    num_kv: int
    head_dim: int

    @property
    def per_group(self) -> int:
        return self.num_heads // self.num_kv


def _shape(adapter: ModelAdapter) -> _Shape:
    family, config = adapter.family, adapter.config
    layer = adapter.layers[0]
    width = mlp_consumer(getattr(layer, family.mlp_attr), family).in_features
    head_dim = getattr(layer, family.attention_attr).head_dim
    return _Shape(width, config.num_attention_heads, config.num_key_value_heads, head_dim)


def _head_channel_scores(criterion: str, stats: InputStatistics, attention: nn.Module, family, seed: int, taylor) -> torch.Tensor:
    """One score per input channel of the attention's output projection (query head channel)."""
    return channel_scores(
        criterion, stats, attention_consumer(attention, family).weight, [query_weight(attention, family)], seed=seed, taylor=taylor
    )


def _group_scores(unit_scores: torch.Tensor, shape: _Shape) -> torch.Tensor:
    """A KV group's score for the adaptive ranking: the mean z-score of its query channels."""
    return standardised(unit_scores).view(shape.num_kv, -1).mean(1)


def _dense_unit_scores(
    runner: SequentialRunner, inputs, adapter: ModelAdapter, shape: _Shape, criterion: str, seed: int, taylor: list | None, heads: bool
) -> tuple[list | None, list]:
    """Per-layer KV-group and FFN-channel scores of the unpruned model (one sequential pass)."""
    family = adapter.family
    group_scores, ffn_scores = [], []
    hidden = inputs.hidden
    for index, layer in enumerate(adapter.layers):
        attention, mlp = getattr(layer, family.attention_attr), getattr(layer, family.mlp_attr)
        down = mlp_consumer(mlp, family)
        attention_out = attention_consumer(attention, family)
        ffn_stats, attn_stats = InputStatistics(shape.width), InputStatistics(attention_out.in_features)
        hooks = [down.register_forward_pre_hook(lambda mod, args: ffn_stats.add(args[0]))]
        if heads:
            hooks.append(attention_out.register_forward_pre_hook(lambda mod, args: attn_stats.add(args[0])))
        try:
            outputs = runner.run_block(index, hidden, inputs.block_kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        ffn_scores.append(
            channel_scores(
                criterion,
                ffn_stats,
                down.weight,
                producer_weights(mlp, family),
                seed=seed + index,
                taylor=taylor[index]["ffn"] if taylor else None,
            )
        )
        if heads:
            scores = _head_channel_scores(
                criterion, attn_stats, attention, family, seed + 1000 + index, taylor[index].get("heads") if taylor else None
            )
            group_scores.append(_group_scores(scores, shape))
        hidden = outputs
    return (group_scores if heads else None), ffn_scores


def _layer_widths(
    adapter: ModelAdapter,
    shape: _Shape,
    runner,
    inputs,
    *,
    allocation: str,
    ratio,
    head_ratio: float,
    ffn_ratio: float,
    heads: bool,
    min_keep: float,
    criterion: str,
    seed: int,
    taylor,
    listed: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),
) -> list[LayerWidth]:
    if allocation == "uniform":
        return uniform_widths(adapter.num_blocks, shape.num_kv, shape.width, head_ratio, ffn_ratio)
    if allocation == LISTED:
        return listed_widths(listed[0], listed[1], adapter.num_blocks, shape.num_kv, shape.width)
    hidden = adapter.config.hidden_size
    group_cost = hidden * shape.head_dim * (2 * shape.per_group + 2)
    channel_cost = 3 * hidden  # a gated MLP channel: one row of gate and of up, one column of down (fused or not)
    unit_ratio = None
    if ratio is not None:  # share of the block parameters -> share of the ranked units' parameters
        prunable = (shape.num_kv * group_cost if heads else 0) + shape.width * channel_cost
        unit_ratio = ratio * adapter.block_parameter_count(0) / prunable
        if unit_ratio >= 1.0:
            raise ParameterError("ratio", f"{ratio} is more than the prunable share of a block; use a smaller ratio")
    group_scores, ffn_scores = _dense_unit_scores(
        runner, inputs, adapter, shape, criterion, seed, taylor, heads and (ratio is not None or head_ratio > 0)
    )
    return adaptive_widths(
        group_scores,
        ffn_scores,
        group_cost=group_cost,
        channel_cost=channel_cost,
        width=shape.width,
        num_kv=shape.num_kv,
        ratio=unit_ratio,
        head_ratio=head_ratio,
        ffn_ratio=ffn_ratio,
        min_keep=min_keep,
    )


def _round_channels(channels: int, width: int, multiple: int) -> int:
    """Kept channels rounded to the nearest multiple (at least one multiple; a layer keeping all stays whole)."""
    if channels >= width or multiple == 1:
        return channels
    return min(width, max(multiple, multiple * round(channels / multiple)))


def unaligned_widths_hint(widths: list[LayerWidth], width: int, device: torch.device) -> str | None:
    """A hint when a model pruned on a GPU keeps FFN widths that GPU matmuls run slowly (not multiples of 8)."""
    odd = sorted({w.channels for w in widths if w.channels < width and w.channels % 8})
    if device.type != "cuda" or not odd:
        return None
    return (
        f"kept FFN widths such as {odd[0]} are not multiples of 8: on an H200 an 8B shape pruned to 10786 channels "
        "ran at 0.62x the dense speed, and at 1.14x with channel_multiple 64; pass channel_multiple 64 "
        "(`channel_multiple` 64) for a model served on GPUs"
    )


def _check_statistics_fit(runner: SequentialRunner, adapter: ModelAdapter, shape: _Shape, holdout: int, heads: bool) -> None:
    """Refuse before any work when the widest statistics (with the solve's working copies) cannot fit."""
    width = max(shape.width, shape.num_heads * shape.head_dim if heads else 0)
    need = statistics_peak_bytes(width, bool(holdout))
    device = runner.device
    if runner.offload:
        need += weight_bytes(adapter.layers[0])
    free = available_memory_bytes(device)
    if free is not None and need > free:
        hint = "use `offload` (only the block being pruned on the accelerator), " if device.type == "cuda" and not runner.offload else ""
        raise PrunekitError(
            f"LIAR's statistics for {width} channels need about {need / 2**30:.1f} GiB on {device}, but only "
            f"{free / 2**30:.1f} GiB are free; {hint}a fixed `damping` (no held-out copy), or a device with more memory"
        )


def _peak_memory(device: torch.device) -> dict:
    """Peak memory for the plan: process RSS (CPU side) and, on CUDA, the accelerator's peak allocation."""
    out = {"peak_rss_mib": peak_rss_bytes() / 2**20}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def prune_width(
    model,
    windows,
    config: LiarConfig | None = None,
    *,
    device=None,
    offload: bool = False,
    batch_size: int = 1,
    progress: bool = True,
    **options,
) -> dict:
    """Prune KV groups (whole GQA groups) and FFN channels of every block, in place and block by block;
    returns the plan (JSON-able). The settings are a LiarConfig (checked where it was made), or its fields given
    as keyword options (checked here; kept widths exact unless `channel_multiple` is given).

    `ratio` is the share of every block's parameters to remove, spent on FFN channels unless `ratio_heads` lets
    whole KV groups take part; otherwise `head_ratio` / `ffn_ratio` are the shares of KV groups / FFN channels.
    `allocation` "uniform" prunes every layer alike (a standard config); "adaptive" ranks units across layers
    (allocation.py) and saves per-layer widths that need `prunekit.load_model`. `channel_multiple` rounds every
    pruned layer's kept FFN channels to the nearest multiple (`auto`: 64 where the FFN is at least 1,024 wide),
    because GPU and llama.cpp matmuls are slow on other sizes (measurements in docs/width.md).
    """
    config = _checked(config, options)
    ratio, ffn_ratio, head_ratio = config.ratio, config.ffn_ratio, config.head_ratio
    allocation, min_keep = config.allocation, config.min_keep
    criterion, reconstruction, damping, seed = config.criterion, config.reconstruction, config.damping, config.seed
    ratio_heads, channel_multiple = config.ratio_heads, config.channel_multiple
    adapter = ModelAdapter(model)
    shape = _shape(adapter)
    heads = ratio_heads if ratio is not None else head_ratio not in (None, 0.0)
    if allocation == LISTED:
        heads = any(groups < shape.num_kv for groups in config.kv_groups)
    head_ratio, ffn_ratio = _uniform_ratios(model, shape, allocation, ratio, head_ratio, ffn_ratio, heads)
    started = time.perf_counter()
    params_before = parameter_count(model)
    taylor = None
    if channel_criterion(criterion).uses_gradients:
        taylor = taylor_unit_scores(model, windows, device=device if not offload else None, heads=heads)
    runner = SequentialRunner(model, device=device, offload=offload, batch_size=batch_size, progress=False)
    inputs = runner.capture(windows.input_ids)
    ratios = {"ratio": ratio, "head_ratio": head_ratio, "ffn_ratio": ffn_ratio, "heads": heads, "min_keep": min_keep}
    listed = (tuple(config.channels), tuple(config.kv_groups))
    widths = _layer_widths(
        adapter, shape, runner, inputs, allocation=allocation, criterion=criterion, seed=seed, taylor=taylor, listed=listed, **ratios
    )
    multiple = 1 if allocation == LISTED else resolve_channel_multiple(channel_multiple, shape.width)
    widths = [replace(w, channels=_round_channels(w.channels, shape.width, multiple)) for w in widths]
    hint = unaligned_widths_hint(widths, shape.width, runner.device)
    if hint:
        warnings.warn(hint, stacklevel=2)
    holdout = holdout_for(reconstruction, damping)
    step = _LayerStep(adapter, shape, runner, inputs, criterion, reconstruction, damping, holdout, seed, taylor)
    step.choose_biases(widths)
    _check_statistics_fit(runner, adapter, shape, step.holdout, any(w.kv_groups < shape.num_kv for w in widths))
    layers_plan = step.run_blocks(widths, progress)
    per_layer = step.finish(model)
    return {
        "method": "liar",
        "criterion": criterion,
        "reconstruction": reconstruction,
        "allocation": allocation,
        "ffn_ratio": ffn_ratio,
        "head_ratio": head_ratio,
        "block_ratio": ratio,
        "channel_multiple": multiple,
        "min_keep": min_keep if allocation == "adaptive" else None,
        **_width_summary(shape, widths, per_layer),
        "mlp_bias": step.use_mlp_bias,
        "attention_bias": step.use_attn_bias,
        "damping": damping,
        "params_before": params_before,
        "params_after": parameter_count(model),
        "data": windows.summary(),
        "ffn_outputs": step.ffn_outputs if step.prunes_ffn or step.use_mlp_bias else None,
        "seconds": time.perf_counter() - started,
        **_peak_memory(runner.device),
        "layers": layers_plan,
    }


def _width_summary(shape: _Shape, widths: list[LayerWidth], per_layer: bool) -> dict:
    return {
        "intermediate_size_before": shape.width,
        "intermediate_size_after": max(w.channels for w in widths),
        "kv_heads_before": shape.num_kv,
        "kv_heads_after": max(w.kv_groups for w in widths),
        "per_layer_widths": per_layer,
        "ffn_channels_removed": 1 - sum(w.channels for w in widths) / (len(widths) * shape.width),
        "kv_groups_removed": 1 - sum(w.kv_groups for w in widths) / (len(widths) * shape.num_kv),
    }


def _checked(config: LiarConfig | None, options: dict) -> LiarConfig:
    """The config a run was given (checked where it was made), or one made and checked from keyword options;
    called that way, kept FFN widths are exact unless `channel_multiple` says otherwise."""
    if config is not None:
        if options:
            raise ParameterError("config", f"is given, so {', '.join(sorted(options))} belong in it")
        return config
    config = LiarConfig(**{"channel_multiple": 1, **options})
    config.check()
    return config


def _uniform_ratios(model, shape: _Shape, allocation: str, ratio, head_ratio, ffn_ratio, heads: bool) -> tuple[float, float]:
    """(head_ratio, ffn_ratio): a block `ratio` split between them, refused where it would empty a layer."""
    if ratio is not None and allocation == "uniform":
        head_ratio, ffn_ratio = split_block_ratio(model, ratio, heads=heads)
    head_ratio, ffn_ratio = head_ratio or 0.0, ffn_ratio or 0.0
    if allocation == "uniform" and shape.width - int(round(ffn_ratio * shape.width)) < 1:
        raise ParameterError("ffn_ratio", f"{ffn_ratio} would remove every FFN channel; use a smaller ratio")
    if head_ratio > 0 and allocation == "uniform" and shape.num_kv - int(round(head_ratio * shape.num_kv)) < 1:
        raise ParameterError(
            "head_ratio", f"{head_ratio} would remove every KV group of a layer ({shape.num_kv} per layer); use a smaller ratio"
        )
    return head_ratio, ffn_ratio


@dataclass
class _LayerStep:
    """Prunes and reconstructs one block's attention and FFN, with what every block shares."""

    adapter: ModelAdapter
    shape: _Shape
    runner: SequentialRunner
    inputs: object
    criterion: str
    reconstruction: str
    damping: float | str
    holdout: int
    seed: int
    taylor: list | None
    use_mlp_bias: bool = False
    use_attn_bias: bool = False
    prunes_ffn: bool = False
    ffn_outputs: str = "recomputed"  # "rerun" once a family's block is found not to fit the recomputation
    checked: bool = False

    def choose_biases(self, widths: list[LayerWidth]) -> None:
        """Whether the consumers get a bias: for the bias reconstructions, or where the config already has one."""
        family, config = self.adapter.family, self.adapter.config
        prunes_heads = any(w.kv_groups < self.shape.num_kv for w in widths)
        self.prunes_ffn = any(w.channels < self.shape.width for w in widths)
        wants_bias = self.reconstruction in ("bias", "liar")
        mlp_field, attn_field = family.mlp_bias_field, family.attention_bias_field
        self.use_mlp_bias = self.prunes_ffn and mlp_field is not None and (wants_bias or getattr(config, mlp_field, False))
        self.use_attn_bias = prunes_heads and attn_field is not None and (wants_bias or getattr(config, attn_field, False))

    def run_blocks(self, widths: list[LayerWidth], progress: bool) -> list[dict]:
        """Each block in turn, on the outputs of the blocks already pruned; returns one plan entry per block."""
        hidden = self.inputs.hidden
        layers_plan = []
        for index in tqdm(
            range(self.adapter.num_blocks),
            desc=f"liar: pruning and reconstructing each layer ({self.criterion} criterion, {self.reconstruction} reconstruction)",
            disable=not progress,
            leave=False,
        ):
            entry = {"block": index, "kv_groups": widths[index].kv_groups, "channels": widths[index].channels}
            self.attention(index, hidden, widths[index].kv_groups, entry)
            outputs = self.ffn(index, hidden, widths[index].channels, entry)
            layers_plan.append(entry)
            hidden = outputs if outputs is not None else self.runner.run_block(index, hidden, self.inputs.block_kwargs)
        return layers_plan

    def attention(self, index: int, hidden, keep_groups: int, entry: dict) -> None:
        # A layer that keeps everything is still rebuilt when the config's bias flag will cover every layer.
        if not (keep_groups < self.shape.num_kv or self.use_attn_bias):
            return
        family, shape, layer = self.adapter.family, self.shape, self.adapter.layers[index]
        attention = getattr(layer, family.attention_attr)
        attention_out = attention_consumer(attention, family)
        mlp = getattr(layer, family.mlp_attr)
        stats = input_statistics(
            self.runner, index, hidden, self.inputs.block_kwargs, attention_out, attention_out.in_features, self.holdout, idle=mlp
        )
        taylor = self.taylor[index].get("heads") if self.taylor else None
        scores = _head_channel_scores(self.criterion, stats, attention, family, self.seed + 1000 + index, taylor)
        groups, channels, kv_rows = kept_heads(scores, shape.num_heads, shape.num_kv, shape.head_dim, keep_groups)
        folded = fold_pruned_inputs(
            attention_out.weight, channels, stats, self.reconstruction, with_bias=self.use_attn_bias, damping=self.damping, release=True
        )
        check_finite(folded, index, "attention")
        entry.update(kept_kv_groups=groups.tolist(), o_proj_output_mse=folded.output_error, o_proj_damping=folded.damping)
        slice_attention(attention, family, channels, kv_rows, folded.weight, folded.bias, self.use_attn_bias)

    def ffn(self, index: int, hidden, n_keep: int, entry: dict):
        """Prune the block's FFN; returns the block's outputs where they could be recomputed cheaply, else None."""
        if not (n_keep < self.shape.width or self.use_mlp_bias):
            return None
        family = self.adapter.family
        mlp = getattr(self.adapter.layers[index], family.mlp_attr)
        down = mlp_consumer(mlp, family)
        ffn = _FfnPass(self.runner, self.adapter, index, self.shape.width, self.holdout)
        recompute = self.ffn_outputs == "recomputed" and ffn.can_recompute
        ffn.run(hidden, self.inputs.block_kwargs, keep_inputs=recompute)
        stats = ffn.stats
        scores = channel_scores(
            self.criterion,
            stats,
            down.weight,
            producer_weights(mlp, family),
            seed=self.seed + index,
            taylor=self.taylor[index]["ffn"] if self.taylor else None,
        )
        keep = torch.topk(scores, n_keep).indices.sort().values
        folded = fold_pruned_inputs(
            down.weight, keep, stats, self.reconstruction, with_bias=self.use_mlp_bias, damping=self.damping, release=True
        )
        check_finite(folded, index, "FFN")
        entry.update(kept_channels=keep.tolist(), output_mse=folded.output_error, damping=folded.damping)
        slice_mlp(mlp, family, keep, folded.weight, folded.bias, self.use_mlp_bias)
        del stats, folded
        if not recompute:
            return None
        outputs = ffn.pruned_outputs(keep)
        if not self.checked and not _matches_a_real_run(self.runner, index, hidden, self.inputs.block_kwargs, outputs[0]):
            self.ffn_outputs, outputs = "rerun", None  # this family's block is not residual + post(mlp): run it
        self.checked = True
        return outputs

    def finish(self, model) -> bool:
        """Set the config's bias flags and record per-layer widths (returned); a uniform result lets every fused
        attention read the shared config again."""
        family, config = self.adapter.family, self.adapter.config
        if self.use_mlp_bias:
            setattr(config, family.mlp_bias_field, True)
        if self.use_attn_bias:
            setattr(config, family.attention_bias_field, True)
        per_layer = record_layer_widths(model)
        if not per_layer:
            share_attention_config([getattr(layer, family.attention_attr) for layer in self.adapter.layers], family, config)
        return per_layer


class LayerVariants:
    """LIAR applied to one layer at a time of an otherwise dense model, for scoring a per-layer library
    (`prunekit fit`): every variant of layer k is computed from the dense model's own inputs to layer k, with
    one set of statistics per layer shared by its variants; the consumers get the biases a model that prunes
    both heads and channels carries. Gradient criteria are refused (they need a pass over the whole model)."""

    def __init__(self, model, runner: SequentialRunner, inputs, config: LiarConfig):
        if channel_criterion(config.criterion).uses_gradients:
            raise ParameterError("criterion", f"{config.criterion} needs gradients; fit's library uses wanda, magnitude or fluctuation")
        self.adapter, self.runner, self.inputs, self.config = ModelAdapter(model), runner, inputs, config
        self.shape = _shape(self.adapter)
        self.holdout = holdout_for(config.reconstruction, config.damping)
        step = _LayerStep(
            self.adapter,
            self.shape,
            runner,
            inputs,
            config.criterion,
            config.reconstruction,
            config.damping,
            self.holdout,
            config.seed,
            None,
        )
        step.choose_biases([LayerWidth(max(1, self.shape.num_kv - 1), max(1, self.shape.width - 1))])
        self.use_attn_bias, self.use_mlp_bias = step.use_attn_bias, step.use_mlp_bias

    def attention_variants(self, index: int, hidden, kv_options: list[int]) -> dict[int, nn.Module]:
        """{kv groups kept: a pruned copy of layer `index`} from one pass of statistics over `hidden`."""
        if not kv_options:
            return {}
        family, shape, layer = self.adapter.family, self.shape, self.adapter.layers[index]
        attention = getattr(layer, family.attention_attr)
        attention_out = attention_consumer(attention, family)
        stats = input_statistics(
            self.runner,
            index,
            hidden,
            self.inputs.block_kwargs,
            attention_out,
            attention_out.in_features,
            self.holdout,
            idle=getattr(layer, family.mlp_attr),
        )
        scores = _head_channel_scores(self.config.criterion, stats, attention, family, self.config.seed + 1000 + index, None)
        out = {}
        for kv in kv_options:
            _, channels, kv_rows = kept_heads(scores, shape.num_heads, shape.num_kv, shape.head_dim, kv)
            folded = fold_pruned_inputs(
                attention_out.weight, channels, stats, self.config.reconstruction, with_bias=self.use_attn_bias, damping=self.config.damping
            )
            check_finite(folded, index, "attention")
            variant = copy.deepcopy(layer)
            slice_attention(
                getattr(variant, family.attention_attr), family, channels, kv_rows, folded.weight, folded.bias, self.use_attn_bias
            )
            out[kv] = variant
        return out

    def ffn_variants(self, index: int, hidden, channel_options: list[int]) -> dict[int, nn.Module]:
        """{FFN channels kept: a pruned copy of layer `index`} from one pass of statistics over `hidden`."""
        family, layer = self.adapter.family, self.adapter.layers[index]
        mlp = getattr(layer, family.mlp_attr)
        down = mlp_consumer(mlp, family)
        ffn = _FfnPass(self.runner, self.adapter, index, self.shape.width, self.holdout)
        ffn.run(hidden, self.inputs.block_kwargs, keep_inputs=False)
        scores = channel_scores(self.config.criterion, ffn.stats, down.weight, producer_weights(mlp, family), seed=self.config.seed + index)
        out = {}
        for channels in channel_options:
            keep = torch.topk(scores, channels).indices.sort().values
            folded = fold_pruned_inputs(
                down.weight, keep, ffn.stats, self.config.reconstruction, with_bias=self.use_mlp_bias, damping=self.config.damping
            )
            check_finite(folded, index, "FFN")
            variant = copy.deepcopy(layer)
            slice_mlp(getattr(variant, family.mlp_attr), family, keep, folded.weight, folded.bias, self.use_mlp_bias)
            out[channels] = variant
        return out
