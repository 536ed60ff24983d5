"""The choice itself: a mixed-integer program over the library (scipy's `milp`, HiGHS).

Each dense layer takes exactly one option: dropped, or one KV-group count and one FFN width; with `uniform`,
every kept layer takes the same count and width (one shared choice each, for families whose llama.cpp form
reads one width for all layers), while any layers may still be dropped. The objective is
the sum of the options' KL scores (what the library measured for each alone); the budgets are linear in the
options (parameters, predicted GGUF bytes, predicted decode time). Several distinct candidates come from
solving again with the earlier answers cut off: each new one differs from every earlier one in at least
`differ` options. Scores do not add up exactly across layers, which is why the candidates are then built and
measured whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prunekit.fitting.costs import DROPPED, GgufTypes, LatencyModel, LayerChoice, Structure, attention_params, dense_structure, ffn_params
from prunekit.fitting.library import Library


@dataclass
class Budget:
    """Upper bounds on one solve (None: no bound)."""

    max_params: int | None = None
    max_bytes: int | None = None
    max_relative_time: float | None = None  # decode time / the dense model's at the same type


@dataclass
class Solution:
    structure: Structure
    predicted_kl: float  # the sum of the chosen options' scores


SHARED = -1  # the layer index of a shared (uniform) choice's variables


def _options(library: Library, uniform: bool = False) -> list[tuple[int, str, int, float]]:
    """(layer, kind, value, score) of every variable: kind 'drop', 'kv' or 'ffn' (the dense width scores 0); with
    `uniform`, also one 'kv' and one 'ffn' variable per value at layer SHARED, which the layers' choices must follow."""
    shape = library.shape
    out = []
    if uniform:
        out.extend((SHARED, "kv", kv, 0.0) for kv in [shape.num_kv, *library.kv_groups])
        out.extend((SHARED, "ffn", c, 0.0) for c in [shape.width, *library.channels])
    for entry in library.layers:
        i = entry.index
        out.append((i, "drop", 0, entry.drop))
        out.append((i, "kv", shape.num_kv, 0.0))
        out.extend((i, "kv", kv, entry.attention[kv]) for kv in library.kv_groups)
        out.append((i, "ffn", shape.width, 0.0))
        out.extend((i, "ffn", c, entry.ffn[c]) for c in library.channels)
    return out


def solve(
    library: Library,
    budget: Budget,
    *,
    types: GgufTypes | None = None,
    latency: LatencyModel | None = None,
    count: int = 3,
    differ: int = 2,
    reconstruction: str = "liar",
    uniform: bool = False,
    time_limit: float = 20.0,
) -> list[Solution]:
    """Up to `count` distinct structures within `budget`, best first (fewer when fewer exist)."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # scipy loads in about a second: only when a fit solves

    shape = library.shape
    options = _options(library, uniform)
    n = len(options)
    scores = np.array([max(0.0, o[3]) for o in options])
    rows, lower, upper = [], [], []

    def add(row, lo, hi):
        rows.append(row)
        lower.append(lo)
        upper.append(hi)

    for i in range(shape.num_layers):
        for kind in ("kv", "ffn"):
            add([1.0 if o[0] == i and o[1] in ("drop", kind) else 0.0 for o in options], 1, 1)
    if uniform:  # one shared value per kind; a kept layer's value must be the shared one
        for kind in ("kv", "ffn"):
            add([1.0 if o[0] == SHARED and o[1] == kind else 0.0 for o in options], 1, 1)
        shared_of = {(kind, value): k for k, (i, kind, value, _) in enumerate(options) if i == SHARED}
        for j, (i, kind, value, _) in enumerate(options):
            if i != SHARED and kind != "drop":
                shared = shared_of[(kind, value)]
                add([1.0 if k == j else -1.0 if k == shared else 0.0 for k in range(n)], -np.inf, 0)
    add([1.0 if o[1] == "drop" else 0.0 for o in options], 0, shape.num_layers - 1)
    # not the dense model itself (the ladder has it): at least one layer narrowed or dropped
    add(
        [
            1.0 if o[0] != SHARED and o[1] in ("kv", "ffn") and o[2] == (shape.num_kv if o[1] == "kv" else shape.width) else 0.0
            for o in options
        ],
        0,
        2 * shape.num_layers - 1,
    )
    with_bias = reconstruction in ("liar", "bias")
    if budget.max_params is not None:
        fixed = shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.hidden
        row = []
        for i, kind, value, _ in options:
            if i == SHARED:
                row.append(0)
            elif kind == "kv":
                row.append(shape.norms + attention_params(shape, value, with_bias and shape.attention_bias_field))
            elif kind == "ffn":
                row.append(ffn_params(shape, value, with_bias and shape.mlp_bias_field))
            else:
                row.append(0)
        add(row, -np.inf, budget.max_params - fixed)
    if types is not None and (budget.max_bytes is not None or budget.max_relative_time is not None):
        row = []
        for i, kind, value, _ in options:
            if i == SHARED:
                row.append(0)
            elif kind == "kv":
                row.append(types.attention_bytes(shape, i, value, with_bias and shape.attention_bias_field and value < shape.num_kv))
            elif kind == "ffn":
                row.append(types.ffn_bytes(shape, i, value, with_bias and shape.mlp_bias_field and value < shape.width))
            else:
                row.append(0)
        row = np.array(row, dtype=float)
        if budget.max_bytes is not None:
            add(row, -np.inf, budget.max_bytes - types.fixed_bytes())
        if budget.max_relative_time is not None and latency is not None:
            dense_block = types.block_bytes(shape, dense_structure(shape))
            layers_row = np.array([1.0 if kind == "kv" and i != SHARED else 0.0 for i, kind, _, _ in options])
            # b * bytes / dense + c * kept / L <= t - 1 + b + c
            coefficients = latency.bytes_share * row / dense_block + latency.layers_share * layers_row / shape.num_layers
            add(coefficients, -np.inf, budget.max_relative_time - 1 + latency.bytes_share + latency.layers_share)
    out: list[Solution] = []
    for _ in range(count):
        result = milp(
            scores,
            integrality=np.ones(n),
            bounds=Bounds(0, 1),
            constraints=[LinearConstraint(np.array(rows, dtype=float), np.array(lower, dtype=float), np.array(upper, dtype=float))],
            options={"time_limit": time_limit},
        )
        if result.x is None:
            break
        chosen = np.round(result.x).astype(int)
        out.append(Solution(_structure(options, chosen, shape.num_layers), float(scores @ chosen)))
        picked = [1.0 if chosen[j] else 0.0 for j in range(n)]
        add(picked, -np.inf, int(chosen.sum()) - differ)
    return out


def _structure(options, chosen, num_layers: int) -> Structure:
    kv = [0] * num_layers
    ffn = [0] * num_layers
    dropped = set()
    for (i, kind, value, _), on in zip(options, chosen):
        if not on or i == SHARED:
            continue
        if kind == "drop":
            dropped.add(i)
        elif kind == "kv":
            kv[i] = value
        else:
            ffn[i] = value
    return Structure([DROPPED if i in dropped else LayerChoice(kv[i], ffn[i]) for i in range(num_layers)])
