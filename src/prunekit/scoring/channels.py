"""Width importance: statistics of a projection's input channels and the criteria built on them.

`InputStatistics` streams the first and second moments (sum and Gram matrix, float64) of the
activations entering a consuming projection (down_proj for FFN channels), so memory holds one
d x d matrix per layer, never the activations themselves. Criteria (higher = more important):

- `magnitude`: L2 norm of every weight the channel owns (its gate/up rows and down column).
- `wanda`: sum_i |W_down[i, j]| * ||x_j||_2 (Wanda, summed per channel as Wanda-sp does).
- `fluctuation`: FLAP's variance of x_j over calibration tokens times ||W_down[:, j]||^2.
- `taylor`: sum |w * dL/dw| over the weights the channel owns, from one gradient pass on the dense
  model (`gradients.py`); passed in precomputed.
- `random`: a seeded random score (a control).
"""

from __future__ import annotations

import torch

from prunekit.errors import PrunekitError

CRITERIA = ("magnitude", "wanda", "fluctuation", "taylor", "random")


class InputStatistics:
    """Running sum, Gram matrix and count of the rows fed to a linear layer.

    With `holdout_every=k`, every k-th batch is also counted in `held_out`, so a reconstruction can
    choose its ridge damping on data it was not fitted on (`fitted_part()` is the rest).
    """

    def __init__(self, width: int, holdout_every: int = 0):
        self.count = 0
        self.sum = torch.zeros(width, dtype=torch.float64)
        self.gram = torch.zeros(width, width, dtype=torch.float64)
        self.holdout_every = holdout_every
        self.batches = 0
        self.held_out = InputStatistics(width) if holdout_every else None

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).to("cpu", torch.float64)
        self._add_rows(rows)
        self.batches += 1
        if self.held_out is not None and self.batches % self.holdout_every == 0:
            self.held_out._add_rows(rows)

    def _add_rows(self, rows: torch.Tensor) -> None:
        self.count += rows.shape[0]
        self.sum += rows.sum(0)
        self.gram += rows.T @ rows

    def fitted_part(self) -> "InputStatistics":
        """Everything but the held-out batches."""
        out = InputStatistics(self.sum.numel())
        out.count = self.count - self.held_out.count
        out.sum = self.sum - self.held_out.sum
        out.gram = self.gram - self.held_out.gram
        return out

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    @property
    def variance(self) -> torch.Tensor:
        return (torch.diagonal(self.gram) / self.count - self.mean ** 2).clamp_min(0)

    @property
    def norm(self) -> torch.Tensor:
        """||x_j||_2 over all calibration tokens."""
        return torch.diagonal(self.gram).clamp_min(0).sqrt()


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise PrunekitError(f"unknown criterion '{criterion}'; choose one of {', '.join(CRITERIA)}")
    return criterion


def ffn_channel_scores(criterion: str, stats: InputStatistics, down_weight: torch.Tensor,
                       producer_weights: list[torch.Tensor], seed: int = 0, taylor: torch.Tensor | None = None) -> torch.Tensor:
    """One score per intermediate channel. `producer_weights` are the [d_int, hidden] matrices
    that write the channel (gate and up); `down_weight` [hidden, d_int] consumes it; `taylor` is
    the precomputed gradient score (criterion `taylor` only)."""
    down = down_weight.detach().to("cpu", torch.float64)
    if criterion == "taylor":
        if taylor is None or taylor.numel() != down.shape[1]:
            raise PrunekitError("the taylor criterion needs gradient scores from scoring.gradients.taylor_unit_scores")
        return taylor.to(torch.float64)
    if criterion == "magnitude":
        owned = down.pow(2).sum(0) + sum(w.detach().to("cpu", torch.float64).pow(2).sum(1) for w in producer_weights)
        return owned.sqrt()
    if criterion == "wanda":
        return (down.abs() * stats.norm[None, :]).sum(0)
    if criterion == "fluctuation":
        return stats.variance * down.pow(2).sum(0)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(down.shape[1], generator=generator, dtype=torch.float64)
