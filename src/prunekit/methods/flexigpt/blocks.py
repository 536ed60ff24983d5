"""FlexiGPT (Smith et al., 2025): replace pruned blocks by weight-shared blocks with low-rank adapters.

1. Score blocks (BI by default) and pick the `remove` least important ones.
2. For each pruned block i pick the surviving block j with the smallest low-rank distance
   d(i, j) = sum over the block's linear weights of || W_i^r - (W_j^r + rank_r(W_i^r - W_j^r)) ||_F
   (W^r: rank-r SVD truncation). Plain Frobenius distance is kept as an ablation.
3. Block i becomes block j's weights (shared storage) + its own LoRA initialised from the SVD of
   W_i - W_j, its own norms, and output normalisation with a small learnable scale on the attention
   and MLP outputs. The depth is unchanged; the parameters saved are block i's linear weights.
`extend_model` uses the same blocks to grow a model deeper.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.errors import ParameterError, PrunekitError
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.shared_blocks import build_shared_block, is_shared_block, linear_paths, shared_linears

log = logging.getLogger(__name__)

DISTANCES = ("low-rank", "frobenius")
PATTERNS = ("block", "sequential")
DEFAULT_NORM_SCALE = 0.01
MEASURED = "measured"  # output-norm scales from the replaced block's own output RMS, per channel


def default_rank(config) -> int:
    """The paper's 256 for a 4096-wide model is hidden/16; scale it with the model."""
    return max(1, config.hidden_size // 16)


def checked_rank(config, rank: int | None) -> int:
    """The adapter rank to use. A weight difference has rank at most the hidden size, so a larger
    rank adds nothing but parameters: refused. From half the hidden size up, each attention adapter
    pair is as large as the weight it stands for, so the model grows: said, since it is rarely meant."""
    rank = rank or default_rank(config)
    hidden = config.hidden_size
    if not 1 <= rank <= hidden:
        raise PrunekitError(
            f"adapter rank {rank} must be between 1 and the hidden size {hidden} (a weight difference has no "
            f"higher rank); the default is {default_rank(config)}"
        )
    if rank >= hidden // 2:
        log.warning(
            "adapter rank %d is at least half the hidden size %d: the shared blocks' adapters are as large as the "
            "weights they replace, so the model does not shrink",
            rank,
            hidden,
        )
    return rank


def _block_weights(block: nn.Module, family) -> list[torch.Tensor]:
    return [getattr(getattr(block, sub), name).weight.detach() for sub, name, _ in linear_paths(family)]


def _truncate(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (U_r S_r, V_r^T) of the rank-r SVD truncation, in float64."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank]


def low_rank_distance(first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor], rank: int) -> float:
    """|| D - rank_r(D) ||_F for D = W_i^r - W_j^r, from the factors (D has rank <= 2r, so QR + a small SVD)."""
    left = torch.cat([first[0], -second[0]], dim=1)
    right = torch.cat([first[1], second[1]], dim=0)
    _, r_left = torch.linalg.qr(left)
    _, r_right = torch.linalg.qr(right.t())
    singular = torch.linalg.svdvals(r_left @ r_right.t())
    return float(singular[rank:].pow(2).sum().sqrt())


def distance_table(model, pruned: list[int], survivors: list[int], rank: int, distance: str = "low-rank") -> dict[int, dict[int, float]]:
    """{pruned block: {surviving block: distance summed over the block's linear weights}}."""
    if distance not in DISTANCES:
        raise PrunekitError(f"unknown distance '{distance}'; use one of {', '.join(DISTANCES)}")
    adapter = ModelAdapter(model)
    weights = {i: _block_weights(adapter.layers[i], adapter.family) for i in set(pruned) | set(survivors)}
    table: dict[int, dict[int, float]] = {}
    if distance == "frobenius":
        for i in pruned:
            table[i] = {j: float(sum((a.double() - b.double()).norm() for a, b in zip(weights[i], weights[j]))) for j in survivors}
        return table
    factors = {i: [_truncate(w, rank) for w in ws] for i, ws in weights.items()}
    for i in pruned:
        table[i] = {j: sum(low_rank_distance(a, b, rank) for a, b in zip(factors[i], factors[j])) for j in survivors}
    return table


def replace_blocks(
    model,
    pruned: list[int],
    *,
    rank: int | None = None,
    output_norm: float | None = DEFAULT_NORM_SCALE,
    svd_init: bool = True,
    distance: str = "low-rank",
    progress: bool = True,
) -> dict:
    """Replace blocks `pruned` of `model` in place by shared blocks; returns the record for the plan."""
    adapter = ModelAdapter(model)
    num_blocks = adapter.num_blocks
    rank = checked_rank(model.config, rank)
    pruned = sorted(set(pruned))
    if not pruned or pruned[0] < 0 or pruned[-1] >= num_blocks or len(pruned) >= num_blocks:
        raise PrunekitError(f"blocks to replace {pruned} must be distinct indices in 0..{num_blocks - 1}, leaving at least one")
    if any(is_shared_block(adapter.layers[i]) for i in range(num_blocks)):
        raise PrunekitError("this model already holds shared blocks; replace blocks of a plain model")
    survivors = [i for i in range(num_blocks) if i not in set(pruned)]
    started = time.perf_counter()
    table = distance_table(model, pruned, survivors, rank, distance)
    choice = {i: min(survivors, key=lambda j: (table[i][j], j)) for i in pruned}
    params_before = parameter_count(model)
    layers = list(adapter.layers)
    kept_energy = {}
    for i in tqdm(pruned, desc="replacing blocks", disable=not progress, leave=False):
        block = build_shared_block(layers[i], layers[choice[i]], adapter.family, rank=rank, output_norm=output_norm, layer_idx=i)
        if svd_init:
            energies = []
            for sub, name, _ in linear_paths(adapter.family):
                linear = getattr(getattr(block, sub), name)
                linear = getattr(linear, "projection", linear)
                singular = linear.init_from_difference(getattr(getattr(layers[i], sub), name))
                energies.append(float(singular[:rank].pow(2).sum() / singular.pow(2).sum().clamp_min(1e-30)))
            kept_energy[i] = sum(energies) / len(energies)
        layers[i] = block
    adapter.layers = nn.ModuleList(layers)
    adapters_per_block = sum(p.numel() for p in layers[pruned[0]].parameters())
    replaced_block = adapter.block_parameter_count(choice[pruned[0]])
    return {
        "replaced_blocks": pruned,
        "shares_with": {str(i): choice[i] for i in pruned},
        "rank": rank,
        "distance": distance,
        "distances": {str(i): {str(j): d for j, d in row.items()} for i, row in table.items()},
        "output_norm": output_norm,
        "svd_init": svd_init,
        "svd_energy_kept": {str(i): e for i, e in kept_energy.items()},
        "own_parameters_per_replacement": adapters_per_block,
        "own_parameters_fraction_of_block": adapters_per_block / replaced_block,
        "params_before": params_before,
        "params_after": parameter_count(model),
        "seconds": time.perf_counter() - started,
    }


def extend_model(
    model, to_blocks: int, *, pattern: str = "block", rank: int | None = None, output_norm: float | None = DEFAULT_NORM_SCALE, seed: int = 0
) -> dict:
    """Grow `model` to `to_blocks` blocks by repeating blocks, each repeat with its own adapters.

    pattern `block`: repeats spread over the depth, each right after its source (A A' B B' ...);
    `sequential`: the last blocks repeated as one run after themselves (... X Y Z X' Y' Z').
    The LoRA A is random and B zero (as in LoRA), so a repeat starts as its source block with
    output normalisation at a small scale: close to the original function, and trainable.
    """
    if pattern not in PATTERNS:
        raise PrunekitError(f"unknown pattern '{pattern}'; use one of {', '.join(PATTERNS)}")
    adapter = ModelAdapter(model)
    num_blocks = adapter.num_blocks
    if any(is_shared_block(layer) for layer in adapter.layers):
        raise PrunekitError("this model already holds shared blocks; extend a plain model")
    added = to_blocks - num_blocks
    if added < 1 or added > num_blocks:
        raise ParameterError(
            "to_blocks", f"{to_blocks} must be between {num_blocks + 1} and {2 * num_blocks} for a {num_blocks}-block model"
        )
    rank = checked_rank(model.config, rank)
    if pattern == "block":
        sources = sorted({math.floor((k + 0.5) * num_blocks / added) for k in range(added)})
    else:
        sources = list(range(num_blocks - added, num_blocks))
    order: list[tuple[int, bool]] = []  # (source block, is a repeat)
    for i in range(num_blocks):
        order.append((i, False))
        if pattern == "block" and i in sources:
            order.append((i, True))
    if pattern == "sequential":
        order += [(i, True) for i in sources]
    generator = torch.Generator().manual_seed(seed)
    originals = list(adapter.layers)
    layers = []
    for position, (source, repeat) in enumerate(order):
        if not repeat:
            layers.append(originals[source])
            continue
        block = build_shared_block(
            originals[source], originals[source], adapter.family, rank=rank, output_norm=output_norm, layer_idx=position
        )
        for linear in shared_linears(block):
            bound = 1 / math.sqrt(linear.in_features)
            with torch.no_grad():
                linear.lora_A.copy_((torch.rand(linear.lora_A.shape, generator=generator) * 2 - 1) * bound)
        layers.append(block)
    params_before = parameter_count(model)
    adapter.layers = nn.ModuleList(layers)
    for position, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = position
    config = model.config
    for field in adapter.family.per_layer_config_fields:
        values = getattr(config, field, None)
        if isinstance(values, (list, tuple)) and len(values) == num_blocks:
            setattr(config, field, [values[source] for source, _ in order])
    config.num_hidden_layers = len(layers)
    return {
        "pattern": pattern,
        "blocks_before": num_blocks,
        "blocks_after": len(layers),
        "rank": rank,
        "output_norm": output_norm,
        "layout": [{"position": p, "source": s, "repeat": r} for p, (s, r) in enumerate(order)],
        "params_before": params_before,
        "params_after": parameter_count(model),
    }
