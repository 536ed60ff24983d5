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

import math
import warnings
from dataclasses import dataclass

import torch

from prunekit.errors import ComputationError, ParameterError, PrunekitError
from prunekit.scoring.channels import InputStatistics, product_precision

RECONSTRUCTIONS = ("none", "bias", "liar")
AUTO_DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HOLDOUT_EVERY = 4  # with damping "auto", every 4th calibration batch is held out to choose it


def check_damping(damping) -> None:
    if damping == "auto":
        return
    if isinstance(damping, str):
        raise ParameterError("damping", f"'{damping}' is neither a number nor 'auto'")
    if not damping >= 0:
        raise ParameterError("damping", f"{damping} must be a number >= 0 or 'auto'")


@dataclass
class Folded:
    weight: torch.Tensor  # [out, |P|], float64, on the statistics' device
    bias: torch.Tensor | None  # [out] added bias (None: no bias needed)
    damping: float = 0.0
    # The map from the kept inputs (plus a constant 1 when fitted with an intercept) to the pruned
    # ones: x_M ~ coefficients.T @ [x_P; 1]. Zero for `none`; the means (intercept only) for `bias`.
    coefficients: torch.Tensor | None = None
    output_error: float | None = None  # E||W x - (W' x_P + b')||^2 on the statistics it was fitted on


def _normal_equations(stats: InputStatistics, kept: torch.Tensor, pruned: torch.Tensor, with_bias: bool):
    """(A, R) of the least-squares fit x_M ~ Z.T [x_P; 1]: A = E[x~ x~^T], R = E[x~ x_M^T] (sums, not means).

    Gathered straight into matrices with room for the intercept row (no concatenated copies)."""
    k, extra = kept.numel(), int(with_bias)
    A = torch.empty(k + extra, k + extra, dtype=torch.float64, device=stats.device)
    R = torch.empty(k + extra, pruned.numel(), dtype=torch.float64, device=stats.device)
    stats.block(kept, kept, out=A[:k, :k])
    stats.block(kept, pruned, out=R[:k])
    if with_bias:
        total = stats.sum
        A[:k, k] = total[kept]
        A[k, :k] = total[kept]
        A[k, k] = float(stats.count)
        R[k] = total[pruned]
    return A, R


def _solve_psd(matrix: torch.Tensor, rhs: torch.Tensor, damping: float, scale_dims: int) -> tuple[torch.Tensor, float, float]:
    """Solve (matrix + lambda I) Z = rhs by Cholesky, raising lambda until the factorisation succeeds.

    lambda = damping * mean diagonal of the first `scale_dims` entries (the channel block, not the
    intercept), so the damping is relative to the activations' scale. Runs on the matrix's device.
    Returns the solution, the relative damping used and lambda itself.
    """
    diag_mean = float(torch.diagonal(matrix)[:scale_dims].mean().clamp_min(1e-12))
    damped = torch.diagonal(matrix)[:scale_dims]  # never damp the intercept
    undamped = damped.clone()
    for attempt in range(8):
        lam = damping * diag_mean
        damped += lam  # in place and restored below: no second copy of the system
        try:
            factor, info = torch.linalg.cholesky_ex(matrix)
        finally:
            damped.copy_(undamped)
        if int(info) == 0:
            solution = torch.cholesky_solve(rhs, factor)
            if bool(torch.isfinite(solution).all()):
                return solution, float(damping), float(lam)
        damping = max(damping * 10, 1e-8)
        if attempt == 0:
            warnings.warn("Gram matrix is singular or ill-conditioned; raising the ridge damping", stacklevel=3)
    raise ComputationError(
        "least-squares reconstruction failed even with strong damping; use more calibration data or `reconstruction` bias"
    )


def _split(width: int, keep: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(width, dtype=torch.bool, device=device)
    mask[keep.to(device)] = True
    return mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1)


def _device_of(stats: InputStatistics, weight: torch.Tensor) -> torch.device:
    return stats.device if stats.device is not None else weight.device


def fold_pruned_inputs(
    weight: torch.Tensor,
    keep: torch.Tensor,
    stats: InputStatistics,
    method: str,
    *,
    with_bias: bool = True,
    damping: float | str = 1e-4,
    release: bool = False,
) -> Folded:
    """New weight for the kept input columns (and an added bias) of a layer that loses inputs.

    Everything runs in float64 on the device that holds the statistics (the block's device).
    `release=True` frees each Gram matrix as soon as the systems it feeds are formed (the caller
    does not need them any more), which lowers the peak memory of large layers."""
    if method not in RECONSTRUCTIONS:
        raise PrunekitError(f"unknown reconstruction '{method}'; choose one of {', '.join(RECONSTRUCTIONS)}")
    device = _device_of(stats, weight)
    kept, pruned = _split(weight.shape[1], keep, device)
    W_M = _columns(weight, pruned, device)  # the kept columns are read only at the end: no float64 copy of W
    if method == "none" or pruned.numel() == 0:
        folded = Folded(_columns(weight, kept, device), None, coefficients=W_M.new_zeros(kept.numel(), pruned.numel()))
        folded.output_error = output_error(weight, keep, folded, stats) if pruned.numel() else 0.0
        return folded
    if method == "bias":
        if not with_bias:
            raise PrunekitError(
                "bias compensation needs a bias on the consuming projection, which this model family cannot hold in its config; "
                "use `reconstruction` liar or none"
            )
        coefficients = W_M.new_zeros(kept.numel() + 1, pruned.numel())
        coefficients[-1] = stats.mean[pruned]
        folded = Folded(_columns(weight, kept, device), W_M @ stats.mean[pruned], coefficients=coefficients)
        folded.output_error = output_error(weight, keep, folded, stats)
        return folded
    S = W_M.T @ W_M
    count, total = stats.count, None
    if damping == "auto":
        held_out = stats.held_out
        if held_out is None or held_out.count == 0 or held_out.count == stats.count:
            warnings.warn(f"damping 'auto' needs at least {HOLDOUT_EVERY} calibration batches; using {AUTO_DAMPINGS[0]}", stacklevel=2)
            damping = AUTO_DAMPINGS[0]
        else:
            damping, total = _chosen_damping_and_total(stats, kept, pruned, with_bias, S, release)
    if total is None:
        total = _OutputError.of(stats, kept, pruned, with_bias, S)
        if release:
            stats.release()
    if count < kept.numel():
        warnings.warn(f"only {count} calibration tokens for {kept.numel()} kept channels; raising the damping", stacklevel=2)
        damping = max(damping, 1e-1)
    Z, used, lam = _solve_psd(total.A, total.R, damping, kept.numel())
    error = total.error_of_solution(Z, lam, kept.numel())
    del total
    folded_weight = _columns(weight, kept, device).addmm_(W_M, Z[: kept.numel()].T)
    bias = W_M @ Z[kept.numel()] if with_bias else None
    return Folded(folded_weight, bias, used, coefficients=Z, output_error=error)


def _chosen_damping_and_total(stats: InputStatistics, kept, pruned, with_bias: bool, S: torch.Tensor, release: bool):
    """Damping 'auto': the candidate with the lowest held-out error, and the total system to refit with it.

    Each part's systems are formed and (with `release`) its Gram matrix freed before the next part's,
    and the total system is the two parts' sum, added in place (no third copy): the peak is the two
    Gram matrices plus one system (a float32 search adds copies of the systems, within that bound)."""
    fitted, held = _fitted_and_held(stats, kept, pruned, with_bias, S, release)
    errors = _DampingSearch(fitted, held, search_precision(fitted.A.device)).errors()  # its float32 copies go with it
    return min(errors, key=errors.get), fitted.add(held)


def search_precision(device: torch.device) -> torch.dtype:
    """The precision `damping='auto'` compares its candidates in: float32 where float64 runs at half
    speed or less (the CPU, most GPUs), float64 on GPUs with fast float64. Only the choice of damping
    comes from it: the final fit is solved in float64, so a search that picks the same damping gives
    the same weights (on SmolLM2 at 20% and 50%, all 60 modules picked the same as in float64). A
    candidate whose float32 factorisation fails is tried again in float64."""
    return product_precision(device, torch.float32)[0]


def _fitted_and_held(stats: InputStatistics, kept, pruned, with_bias: bool, S: torch.Tensor, release: bool = False):
    """The fitted and held-out parts' output errors (their systems), each part's Gram matrix freed
    (with `release`) once its systems are formed."""
    fitted = _OutputError.of(stats.fitted_part(), kept, pruned, with_bias, S)
    if release:
        stats.release(held_out=False)
    held = _OutputError.of(stats.held_out, kept, pruned, with_bias, S)
    if release:
        stats.held_out.release()
    return fitted, held


def _columns(weight: torch.Tensor, columns: torch.Tensor, device: torch.device) -> torch.Tensor:
    """weight[:, columns] in float64 on `device`, without a float64 copy of the whole matrix."""
    return weight.detach()[:, columns.to(weight.device)].to(device, torch.float64)


class _DampingSearch:
    """Damping 'auto': fit on the fitted part with candidate dampings, score each on the held-out part.

    Candidates are tried from the strongest damping down, and the search stops at the first one
    whose held-out error is higher than the one before: the held-out error of a ridge fit falls and
    then rises as the damping shrinks (on SmolLM2 at 20% and 50%, all 60 modules chose the same
    damping as trying all five). Each candidate costs one Cholesky factorisation and solve; its
    error comes from the held-out moments (`_OutputError`), not from forming its folded weight.
    The search runs in `dtype` (see `search_precision`) on copies of the systems."""

    def __init__(self, fitted: "_OutputError", held: "_OutputError", dtype: torch.dtype = torch.float64):
        # float64 originals, for a candidate that float32 cannot factorise
        self.exact = (fitted.A, fitted.R, held) if dtype != torch.float64 else None
        self.A, self.R, self.held = fitted.A.to(dtype), fitted.R.to(dtype), held.to(dtype)
        self.kept = held.kept
        self.few_tokens = fitted.count < self.kept  # as the final fit would raise the damping

    def errors(self, exhaustive: bool = False) -> dict[float, float]:
        """Held-out output error of the fit with each candidate damping tried (all of them if `exhaustive`)."""
        errors: dict[float, float] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the candidates' own damping warnings are expected here
            for candidate in sorted(AUTO_DAMPINGS, reverse=True):
                damping = max(candidate, 1e-1) if self.few_tokens else candidate
                Z, used, _ = _solve_psd(self.A, self.R, damping, self.kept)
                error = self.held.error(Z)
                if self.exact is not None and (used != damping or not math.isfinite(error)):
                    A, R, held = self.exact
                    error = held.error(_solve_psd(A, R, damping, self.kept)[0])
                if not exhaustive and errors and error > errors[min(errors)]:
                    break
                errors[candidate] = error
        return errors


def damping_errors(
    weight: torch.Tensor, keep: torch.Tensor, stats: InputStatistics, with_bias: bool, exhaustive: bool = False
) -> dict[float, float]:
    """Held-out output error of each candidate damping that `damping='auto'` tries (all if `exhaustive`)."""
    device = _device_of(stats, weight)
    kept, pruned = _split(weight.shape[1], keep, device)
    W_M = _columns(weight, pruned, device)
    S = W_M.T @ W_M
    return _DampingSearch(*_fitted_and_held(stats, kept, pruned, with_bias, S), search_precision(device)).errors(exhaustive)


class _OutputError:
    """The output error of any map Z on one set of statistics, from their moments, set up once.

    error(Z) = E||W_M (x_M - Z.T x~_P)||^2 = [tr(S G_MM) - 2 sum(Z * R S) + sum(A Z * Z S)] / n
    with S = W_M.T W_M, x~_P = [x_P; 1] when fitted with an intercept, and (A, R) the statistics'
    normal equations (sums of products).
    """

    def __init__(self, A: torch.Tensor, R: torch.Tensor, S: torch.Tensor, pruned_gram: torch.Tensor, count: int, kept: int):
        self.A, self.R, self.S = A, R, S
        self.constant = float((S * pruned_gram).sum())
        self.count, self.kept = count, kept
        self._RS: torch.Tensor | None = None

    @classmethod
    def of(cls, stats: InputStatistics, kept: torch.Tensor, pruned: torch.Tensor, with_bias: bool, S: torch.Tensor) -> "_OutputError":
        A, R = _normal_equations(stats, kept, pruned, with_bias)
        return cls(A, R, S, stats.block(pruned, pruned), stats.count, kept.numel())

    @property
    def RS(self) -> torch.Tensor:
        if self._RS is None:
            self._RS = self.R @ self.S
        return self._RS

    def to(self, dtype: torch.dtype) -> "_OutputError":
        """A copy in `dtype` of what `error` reads (itself if it is in `dtype` already)."""
        if self.A.dtype == dtype:
            return self
        copy = object.__new__(_OutputError)
        copy.A, copy.R, copy.S = self.A.to(dtype), None, self.S.to(dtype)
        copy._RS = self.RS.to(dtype)
        copy.constant, copy.count, copy.kept = self.constant, self.count, self.kept
        return copy

    def add(self, other: "_OutputError") -> "_OutputError":
        """These statistics' and `other`'s together (sums add), in place of this one's matrices."""
        self.A += other.A
        self.R += other.R
        self.constant += other.constant
        self.count += other.count
        self._RS = None
        return self

    def error(self, Z: torch.Tensor) -> float:
        total = self.constant - 2 * float((Z * self.RS).sum()) + float(((self.A @ Z) * (Z @ self.S)).sum())
        return max(total, 0.0) / self.count

    def error_of_solution(self, Z: torch.Tensor, lam: float, damped_rows: int) -> float:
        """error(Z) for the Z that solved (A + lam D) Z = R on these same statistics (D: identity on the
        first `damped_rows`): A Z = R - lam D Z, so no product with A is needed."""
        ZS = Z @ self.S
        total = self.constant - float((Z * self.RS).sum()) - lam * float((Z[:damped_rows] * ZS[:damped_rows]).sum())
        return max(total, 0.0) / self.count


def output_error(weight: torch.Tensor, keep: torch.Tensor, folded: Folded, stats: InputStatistics) -> float:
    """Mean squared output error over the calibration tokens: E||W x - (W_P' x_P + b')||^2."""
    device = _device_of(stats, weight)
    W = weight.detach().to(device, torch.float64)
    kept, pruned = _split(W.shape[1], keep, device)
    if folded.coefficients is None or pruned.numel() == 0:
        return _direct_output_error(W, kept, folded, stats)
    Z = folded.coefficients.to(device)
    with_bias = Z.shape[0] > kept.numel()
    W_M = W[:, pruned]
    return _OutputError.of(stats, kept, pruned, with_bias, W_M.T @ W_M).error(Z)


def _direct_output_error(W: torch.Tensor, kept: torch.Tensor, folded: Folded, stats: InputStatistics) -> float:
    A = W.clone()
    A[:, kept] -= folded.weight.to(W.device)
    b = folded.bias.to(W.device) if folded.bias is not None else torch.zeros(W.shape[0], dtype=torch.float64, device=W.device)
    total = torch.trace(A @ stats.gram @ A.T) - 2 * b @ (A @ stats.sum) + stats.count * (b @ b)
    return float(total / stats.count)
