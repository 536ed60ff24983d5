"""Width importance: statistics of a projection's input channels and the criteria built on them.

`InputStatistics` streams the first and second moments (sum and Gram matrix) of the activations
entering a consuming projection (down_proj for FFN channels), so memory holds one d x d matrix per
layer, never the activations themselves. The moments live on the device that runs the block and
are accumulated in float64; each batch's products are computed in the cheapest precision that is
as accurate (see `product_precision`). Criteria (higher = more important):

- `magnitude`: L2 norm of every weight the channel owns (its gate/up rows and down column).
- `wanda`: sum_i |W_down[i, j]| * ||x_j||_2 (Wanda, summed per channel as Wanda-sp does).
- `fluctuation`: FLAP's variance of x_j over calibration tokens times ||W_down[:, j]||^2.
- `taylor`: sum |w * dL/dw| over the weights the channel owns, from one gradient pass on the dense
  model (`gradients.py`); passed in precomputed.
- `random`: a seeded random score (a control).

Each criterion is a `ChannelCriterion` registered by name; `register_channel_criterion(MyCriterion())` adds one
that LIAR (decoders and encoders) then accepts as `criterion`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from prunekit.errors import PrunekitError
from prunekit.scoring.registry import ScorerRegistry

# GPUs whose float64 throughput is half their float32 (datacentre parts: P100, V100, A100, H100/H200, B200).
_FAST_FLOAT64_CAPABILITIES = {(6, 0), (7, 0), (8, 0), (9, 0), (10, 0)}
_GRAM_CHUNKS = 8  # column chunks of the Gram product: only the lower block triangle is computed (36/64 of the flops)
_GATHER_ROWS = 2048  # rows of a Gram matrix gathered at a time into a system (bounds the temporary copies)


def product_precision(device: torch.device, dtype: torch.dtype) -> tuple[torch.dtype, bool]:
    """(dtype of each batch's Gram product, whether TF32 tensor cores may be used), summed into float64.

    - float64 activations stay float64 (tests, exact references).
    - bfloat16/float16 activations: their values have at most 10 mantissa bits, so their products are
      exact in float32, and exact in TF32 too (10 mantissa bits): float32 with TF32 on CUDA.
    - float32 activations: float64 on GPUs with fast float64, float32 elsewhere (the CPU included:
      per-batch float32 sums of at most a few thousand rows, measured to keep LIAR's perplexity).
    """
    if dtype == torch.float64:
        return torch.float64, False
    if dtype in (torch.bfloat16, torch.float16):
        return torch.float32, device.type == "cuda"
    if device.type == "cuda" and torch.cuda.get_device_capability(device) in _FAST_FLOAT64_CAPABILITIES:
        return torch.float64, False
    return torch.float32, False


@contextmanager
def _float32_matmul(allow_tf32: bool):
    """float32 matmuls in full precision, or on TF32 tensor cores where the inputs are exact in TF32."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def statistics_peak_bytes(width: int, holdout: bool) -> int:
    """Peak device memory of one module's statistics and solve, in float64 width x width matrices.

    Without a held-out part: the Gram matrix and the system gathered from it (the system, kept x
    width, is at most one matrix), then the system and its Cholesky factor. With one
    (`damping='auto'`): the two parts' Gram matrices and the first part's system, each Gram matrix
    freed once its system is formed (`fold_pruned_inputs(release=True)`), then two systems and a
    factor. Half a matrix on top covers the gather's and the solves' temporaries."""
    return int(width * width * 8 * (3.5 if holdout else 2.5))


class InputStatistics:
    """Running sum, Gram matrix and count of the rows fed to a linear layer, on the rows' device.

    With `holdout_every=k`, every k-th batch goes to `held_out` instead, so a reconstruction can
    choose its ridge damping on data it was not fitted on (`fitted_part()` is the rest); `count`,
    `sum` and `gram` always cover every batch.
    """

    def __init__(self, width: int, holdout_every: int = 0, device: str | torch.device | None = None):
        self.width = width
        self.device = torch.device(device) if device is not None else None
        self._count = 0
        self._sum: torch.Tensor | None = None
        self._lower: torch.Tensor | None = None  # lower block triangle of the Gram matrix, filled by add()
        self._symmetric = False
        self.holdout_every = holdout_every
        self.batches = 0
        self.held_out = InputStatistics(width, device=device) if holdout_every else None

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1])
        if self.device is not None and rows.device != self.device:
            rows = rows.to(self.device)
        self.batches += 1
        held = self.held_out is not None and self.batches % self.holdout_every == 0
        (self.held_out if held else self)._add_rows(rows)

    def _add_rows(self, rows: torch.Tensor) -> None:
        if self._lower is None:
            self.device = rows.device
            self._sum = torch.zeros(self.width, dtype=torch.float64, device=rows.device)
            self._lower = torch.zeros(self.width, self.width, dtype=torch.float64, device=rows.device)
        self._symmetric = False
        compute, tf32 = product_precision(rows.device, rows.dtype)
        rows = rows.to(compute)
        self._count += rows.shape[0]
        self._sum += rows.sum(0, dtype=torch.float64)
        chunk = self._chunk()
        with _float32_matmul(tf32):
            for start in range(0, self.width, chunk):
                end = min(start + chunk, self.width)
                self._lower[start:end, :end] += rows[:, start:end].T @ rows[:, :end]

    def _chunk(self) -> int:
        return -(-self.width // _GRAM_CHUNKS) if self.width >= 256 else self.width

    def _own_gram(self) -> torch.Tensor:
        """The Gram matrix of this part's own batches: blocks above the diagonal mirrored in place."""
        if self._lower is None:
            return torch.zeros(self.width, self.width, dtype=torch.float64, device=self.device)
        if not self._symmetric:
            chunk = self._chunk()
            for start in range(0, self.width, chunk):
                end = min(start + chunk, self.width)
                self._lower[start:end, end:] = self._lower[end:, start:end].T
            self._symmetric = True
        return self._lower

    def _own_sum(self) -> torch.Tensor:
        return self._sum if self._sum is not None else torch.zeros(self.width, dtype=torch.float64, device=self.device)

    @property
    def count(self) -> int:
        return self._count + (self.held_out.count if self.held_out is not None else 0)

    def _parts(self) -> list["InputStatistics"]:
        return [self] + ([self.held_out] if self.held_out is not None and self.held_out.count else [])

    @property
    def sum(self) -> torch.Tensor:
        return sum(part._own_sum() for part in self._parts())

    def diagonal(self) -> torch.Tensor:
        """The Gram matrix's diagonal over every batch."""
        return sum(torch.diagonal(part._own_gram()) for part in self._parts())

    def block(self, rows: torch.Tensor, cols: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """gram[rows][:, cols] over every batch, without forming the full Gram matrix of all batches
        (a held-out part stays separate); gathered in row chunks to bound the temporary copies, into
        `out` when given (e.g. a view of a larger system)."""
        for index, part in enumerate(self._parts()):
            gram = part._own_gram()
            if out is None:
                out = torch.empty(rows.numel(), cols.numel(), dtype=gram.dtype, device=gram.device)
            for start in range(0, rows.numel(), _GATHER_ROWS):
                piece = gram.index_select(0, rows[start : start + _GATHER_ROWS])[:, cols]
                if index == 0:
                    out[start : start + _GATHER_ROWS] = piece
                else:
                    out[start : start + _GATHER_ROWS] += piece
        return out

    @property
    def gram(self) -> torch.Tensor:
        """The full Gram matrix over every batch (a new matrix when there is a held-out part)."""
        parts = self._parts()
        return parts[0]._own_gram() if len(parts) == 1 else parts[0]._own_gram() + parts[1]._own_gram()

    def fitted_part(self) -> "InputStatistics":
        """Everything but the held-out batches (shares this object's matrices)."""
        out = InputStatistics(self.width, device=self.device)
        out._count, out._sum, out._lower, out._symmetric = self._count, self._own_sum(), self._own_gram(), True
        return out

    def release(self, held_out: bool = True) -> None:
        """Free the moments (for a caller that has formed what it needs from them); the held-out
        part's too unless `held_out=False`."""
        self._sum = self._lower = None
        self._count = 0
        if held_out and self.held_out is not None:
            self.held_out.release()

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    @property
    def variance(self) -> torch.Tensor:
        return (self.diagonal() / self.count - self.mean**2).clamp_min(0)

    @property
    def norm(self) -> torch.Tensor:
        """||x_j||_2 over all calibration tokens."""
        return self.diagonal().clamp_min(0).sqrt()


class ChannelCriterion:
    """A way to score the input channels of a consuming projection (higher = more important). Subclass it, set
    `name`, implement `score`, and register an instance with `register_channel_criterion`.
    `uses_gradients`: it reads the gradient scores LIAR computes first (`taylor`), which need a language-model loss."""

    name: str = ""
    uses_gradients: bool = False

    def score(
        self, stats: InputStatistics, consumer: torch.Tensor, producers: list[torch.Tensor], *, seed: int, gradients: torch.Tensor | None
    ) -> torch.Tensor:
        """One score per channel. `stats`: the channels' input statistics; `consumer` [out, channels] the consuming
        weight in float64 where the statistics live; `producers` [channels, in] the weights that write the channels."""
        raise NotImplementedError


class Magnitude(ChannelCriterion):
    name = "magnitude"

    def score(self, stats, consumer, producers, *, seed, gradients):
        owned = consumer.pow(2).sum(0) + sum(w.detach().to(consumer.device, torch.float64).pow(2).sum(1) for w in producers)
        return owned.sqrt()


class Wanda(ChannelCriterion):
    name = "wanda"

    def score(self, stats, consumer, producers, *, seed, gradients):
        return (consumer.abs() * stats.norm[None, :]).sum(0)


class Fluctuation(ChannelCriterion):
    name = "fluctuation"

    def score(self, stats, consumer, producers, *, seed, gradients):
        return stats.variance * consumer.pow(2).sum(0)


class Taylor(ChannelCriterion):
    name, uses_gradients = "taylor", True

    def score(self, stats, consumer, producers, *, seed, gradients):
        if gradients is None or gradients.numel() != consumer.shape[1]:
            raise PrunekitError("the taylor criterion needs gradient scores from scoring.gradients.taylor_unit_scores")
        return gradients.detach().to(torch.float64)


class Random(ChannelCriterion):
    name = "random"

    def score(self, stats, consumer, producers, *, seed, gradients):
        return torch.rand(consumer.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


CHANNEL_CRITERIA = ScorerRegistry(ChannelCriterion, "channel criterion", "criterion")


def register_channel_criterion(criterion: ChannelCriterion) -> ChannelCriterion:
    """Make `criterion` available by its name to width pruning."""
    return CHANNEL_CRITERIA.register(criterion)


def channel_criterion_names() -> list[str]:
    return CHANNEL_CRITERIA.names()


def channel_criterion(name: str) -> ChannelCriterion:
    """The registered criterion called `name`, or a one-line error naming the known ones."""
    return CHANNEL_CRITERIA.get(name)


def check_criterion(criterion: str) -> str:
    channel_criterion(criterion)
    return criterion


def channel_scores(
    criterion: str,
    stats: InputStatistics,
    down_weight: torch.Tensor,
    producer_weights: list[torch.Tensor],
    seed: int = 0,
    taylor: torch.Tensor | None = None,
) -> torch.Tensor:
    """One score per input channel of a consuming projection (the FFN's down projection, or attention's output
    projection for head channels), by the registered `criterion`. `producer_weights` are the [d_int, hidden]
    matrices that write the channel (gate and up); `down_weight` [hidden, d_int] consumes it; `taylor` is the
    precomputed gradient score. Computed where the statistics live; returned on the CPU (a float64 vector)."""
    device = stats.device if stats.device is not None else down_weight.device
    down = down_weight.detach().to(device, torch.float64)
    scores = channel_criterion(criterion).score(stats, down, producer_weights, seed=seed, gradients=taylor)
    return scores.to("cpu", torch.float64)


for _criterion in (Magnitude(), Wanda(), Fluctuation(), Taylor(), Random()):
    register_channel_criterion(_criterion)
