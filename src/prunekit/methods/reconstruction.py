"""Folding pruned input channels back into the consuming layer (LIAR and FLAP bias compensation).

For a layer y = W_P x_P + W_M x_M + b (P kept, M pruned input channels):
- `none`: drop W_M.
- `bias` (FLAP): b' = b + W_M mean(x_M).
- `liar`: fit x_M ~ Q x_P + p by least squares on calibration activations (ridge-damped, solved
  by Cholesky in float64 from the streamed Gram matrix), then W_P' = W_P + W_M Q, b' = b + W_M p.
  Bias compensation is the special case Q = 0, so with no damping LIAR's output error on the
  calibration data is never larger (the least-squares residual is orthogonal to [x_P, 1]).
When the family cannot hold a bias, `liar` fits without the intercept p.

The ridge damping can be chosen from the data (`damping="auto"`): the map is fitted on all but the
held-out calibration batches for each candidate damping, the one with the lowest output error on
the held-out batches wins, and the map is refitted on everything with it. Too little damping
over-fits when the kept channels are many for the calibration tokens.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from prunekit.errors import PrunekitError
from prunekit.scoring.channels import InputStatistics

RECONSTRUCTIONS = ("none", "bias", "liar")
AUTO_DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HOLDOUT_EVERY = 4  # with damping "auto", every 4th calibration batch is held out to choose it


def check_damping(damping) -> None:
    if damping == "auto":
        return
    if isinstance(damping, str) or not damping >= 0:
        raise PrunekitError(f"--damping {damping} must be a number >= 0 or 'auto'")


@dataclass
class Folded:
    weight: torch.Tensor  # [out, |P|], float64
    bias: torch.Tensor | None  # [out] added bias (None: no bias needed)
    damping: float = 0.0


def _solve_psd(matrix: torch.Tensor, rhs: torch.Tensor, damping: float, scale_dims: int) -> tuple[torch.Tensor, float]:
    """Solve (matrix + lambda I) Z = rhs by Cholesky, raising lambda until the factorisation succeeds.

    lambda = damping * mean diagonal of the first `scale_dims` entries (the channel block, not the
    intercept), so the damping is relative to the activations' scale.
    """
    diag_mean = torch.diagonal(matrix)[:scale_dims].mean().clamp_min(1e-12)
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype)
    eye[scale_dims:, scale_dims:] = 0  # never damp the intercept
    for attempt in range(8):
        lam = damping * diag_mean
        factor, info = torch.linalg.cholesky_ex(matrix + lam * eye)
        if info == 0:
            solution = torch.cholesky_solve(rhs, factor)
            if torch.isfinite(solution).all():
                return solution, float(damping)
        damping = max(damping * 10, 1e-8)
        if attempt == 0:
            warnings.warn("Gram matrix is singular or ill-conditioned; raising the ridge damping", stacklevel=3)
    raise PrunekitError("least-squares reconstruction failed even with strong damping; use more calibration data or --reconstruction bias")


def fold_pruned_inputs(weight: torch.Tensor, keep: torch.Tensor, stats: InputStatistics, method: str,
                       *, with_bias: bool = True, damping: float | str = 1e-4) -> Folded:
    """New weight for the kept input columns (and an added bias) of a layer that loses inputs."""
    if damping == "auto" and method == "liar":
        return _fold_with_chosen_damping(weight, keep, stats, with_bias)
    if method not in RECONSTRUCTIONS:
        raise PrunekitError(f"unknown reconstruction '{method}'; choose one of {', '.join(RECONSTRUCTIONS)}")
    W = weight.detach().to("cpu", torch.float64)
    width = W.shape[1]
    mask = torch.zeros(width, dtype=torch.bool)
    mask[keep] = True
    kept, pruned = mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1)
    W_P, W_M = W[:, kept], W[:, pruned]
    if method == "none" or pruned.numel() == 0:
        return Folded(W_P.clone(), None)
    if method == "bias":
        if not with_bias:
            raise PrunekitError("bias compensation needs a bias on the consuming projection, which this model family cannot hold in its config; use --reconstruction liar or none")
        return Folded(W_P.clone(), W_M @ stats.mean[pruned])
    if stats.count < kept.numel():
        warnings.warn(f"only {stats.count} calibration tokens for {kept.numel()} kept channels; raising the damping", stacklevel=2)
        damping = max(damping, 1e-1)
    G = stats.gram
    if with_bias:
        n = torch.tensor([[float(stats.count)]], dtype=torch.float64)
        s_P = stats.sum[kept][:, None]
        A = torch.cat([torch.cat([G[kept][:, kept], s_P], 1), torch.cat([s_P.T, n], 1)], 0)
        R = torch.cat([G[kept][:, pruned], stats.sum[pruned][None, :]], 0)
    else:
        A, R = G[kept][:, kept], G[kept][:, pruned]
    Z, used = _solve_psd(A, R, damping, kept.numel())
    Q_T = Z[: kept.numel()]  # [|P|, |M|]
    folded_weight = W_P + W_M @ Q_T.T
    bias = W_M @ Z[kept.numel()] if with_bias else None
    return Folded(folded_weight, bias, used)


def _fold_with_chosen_damping(weight: torch.Tensor, keep: torch.Tensor, stats: InputStatistics, with_bias: bool) -> Folded:
    held_out = stats.held_out
    if held_out is None or held_out.count == 0 or held_out.count == stats.count:
        warnings.warn(f"damping 'auto' needs at least {HOLDOUT_EVERY} calibration batches; using {AUTO_DAMPINGS[0]}", stacklevel=3)
        return fold_pruned_inputs(weight, keep, stats, "liar", with_bias=with_bias, damping=AUTO_DAMPINGS[0])
    fitted = stats.fitted_part()
    errors = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the candidates' own damping warnings are expected here
        for candidate in AUTO_DAMPINGS:
            folded = fold_pruned_inputs(weight, keep, fitted, "liar", with_bias=with_bias, damping=candidate)
            errors[candidate] = output_error(weight, keep, folded, held_out)
    chosen = min(errors, key=errors.get)
    return fold_pruned_inputs(weight, keep, stats, "liar", with_bias=with_bias, damping=chosen)


def output_error(weight: torch.Tensor, keep: torch.Tensor, folded: Folded, stats: InputStatistics) -> float:
    """Mean squared output error over the calibration tokens: E||W x - (W_P' x_P + b')||^2."""
    W = weight.detach().to("cpu", torch.float64)
    A = W.clone()
    A[:, keep] -= folded.weight
    b = folded.bias if folded.bias is not None else torch.zeros(W.shape[0], dtype=torch.float64)
    total = torch.trace(A @ stats.gram @ A.T) - 2 * b @ (A @ stats.sum) + stats.count * (b @ b)
    return float(total / stats.count)
