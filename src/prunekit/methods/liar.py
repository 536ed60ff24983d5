"""LIAR (Wang et al., 2025): retraining-free width pruning with least-squares reconstruction.

This module prunes FFN intermediate channels block by block on the sequential engine: the
statistics of block k's down_proj inputs are taken from the outputs of the already-pruned blocks
0..k-1, the channels are ranked by a criterion, the pruned channels' contribution is folded into
down_proj (see `reconstruction.py`), and the pruned block's outputs feed block k+1. Memory holds
one block's Gram matrix, never all activations. Attention-head pruning is not implemented yet.

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
from prunekit.methods.reconstruction import fold_pruned_inputs, output_error
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.scoring.channels import InputStatistics, check_criterion, ffn_channel_scores

# Families whose config can switch on an MLP bias (on gate, up and down projections alike).
MLP_BIAS_FIELD = {"llama": "mlp_bias"}


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
    old = getattr(mlp, consumer)
    bias = old.bias.detach().double().cpu() if old.bias is not None else None
    if added_bias is not None:
        bias = added_bias if bias is None else bias + added_bias
    if use_bias and bias is None:
        bias = torch.zeros(old.out_features, dtype=torch.float64)
    setattr(mlp, consumer, _linear(new_down.to(old.weight.dtype), bias.to(old.weight.dtype) if bias is not None else None, old))
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = keep.numel()


def prune_ffn_channels(model, windows, *, ffn_ratio: float, criterion: str = "wanda", reconstruction: str = "liar",
                       damping: float = 1e-4, device=None, offload: bool = False, batch_size: int = 1,
                       progress: bool = True, seed: int = 0) -> dict:
    """Prune `ffn_ratio` of every block's FFN channels in place; returns the plan (JSON-able)."""
    if not 0.0 <= ffn_ratio < 1.0:
        raise PrunekitError(f"--ffn-ratio {ffn_ratio} must be in [0, 1)")
    check_criterion(criterion)
    adapter = ModelAdapter(model)
    family = adapter.family
    *producers, consumer = family.mlp_projections
    width = getattr(getattr(adapter.layers[0], family.mlp_attr), consumer).in_features
    n_keep = width - int(round(ffn_ratio * width))
    if n_keep < 1:
        raise PrunekitError(f"--ffn-ratio {ffn_ratio} would remove every FFN channel; use a smaller ratio")
    bias_field = MLP_BIAS_FIELD.get(adapter.config.model_type)
    use_bias = bias_field is not None and (reconstruction in ("bias", "liar") or getattr(adapter.config, bias_field, False))
    started = time.perf_counter()
    params_before = parameter_count(model)
    runner = SequentialRunner(model, device=device, offload=offload, batch_size=batch_size, progress=False)
    inputs = runner.capture(windows.input_ids)
    hidden = inputs.hidden
    layers_plan = []
    for index in tqdm(range(adapter.num_blocks), desc=f"liar ffn {criterion}/{reconstruction}", disable=not progress, leave=False):
        mlp = getattr(adapter.layers[index], family.mlp_attr)
        down = getattr(mlp, consumer)
        stats = InputStatistics(width)
        handle = down.register_forward_pre_hook(lambda module, args: stats.add(args[0]))
        try:
            runner.run_block(index, hidden, inputs.block_kwargs)
        finally:
            handle.remove()
        producer_weights = [getattr(mlp, name).weight for name in producers]
        if producers == ["gate_up_proj"]:
            producer_weights = list(producer_weights[0].split(width, dim=0))
        scores = ffn_channel_scores(criterion, stats, down.weight, producer_weights, seed=seed + index)
        keep = torch.topk(scores, n_keep).indices.sort().values
        folded = fold_pruned_inputs(down.weight, keep, stats, reconstruction, with_bias=use_bias, damping=damping)
        error = output_error(down.weight, keep, folded, stats)
        if not torch.isfinite(folded.weight).all() or (folded.bias is not None and not torch.isfinite(folded.bias).all()):
            raise PrunekitError(f"reconstruction of block {index} produced non-finite weights; raise --damping or use --reconstruction bias")
        slice_mlp(mlp, producers, consumer, keep, folded.weight, folded.bias, use_bias)
        layers_plan.append({"block": index, "kept_channels": keep.tolist(), "output_mse": error, "damping": folded.damping})
        hidden = runner.run_block(index, hidden, inputs.block_kwargs)
    model.config.intermediate_size = n_keep
    if use_bias:
        setattr(model.config, bias_field, True)
    return {
        "method": "liar", "target": "ffn", "criterion": criterion, "reconstruction": reconstruction, "ffn_ratio": ffn_ratio,
        "intermediate_size_before": width, "intermediate_size_after": n_keep, "mlp_bias": use_bias,
        "params_before": params_before, "params_after": parameter_count(model), "data": windows.summary(),
        "seconds": time.perf_counter() - started, "layers": layers_plan,
    }
