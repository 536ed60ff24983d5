"""ShortGPT (Men et al., 2024): remove the blocks with the lowest Block Influence, in one shot."""

from __future__ import annotations

from prunekit.errors import PrunekitError
from prunekit.methods.plan import PrunePlan
from prunekit.scoring.blocks import scan_blocks


def check_protected(protect: tuple[int, ...], num_blocks: int) -> None:
    outside = sorted(i for i in set(protect) if not 0 <= i < num_blocks)
    if outside:
        raise PrunekitError(f"protected block(s) {', '.join(map(str, outside))} not in this model (blocks 0..{num_blocks - 1})")


def lowest_scoring(scores: list[float], count: int, protect: tuple[int, ...] = ()) -> list[int]:
    """The `count` least important indices, never one in `protect`."""
    check_protected(protect, len(scores))
    order = sorted((i for i in range(len(scores)) if i not in set(protect)), key=lambda i: (scores[i], i))
    return sorted(order[:count])


def plan_shortgpt(model, windows, num_remove: int, *, metric: str = "bi", protect: tuple[int, ...] = (), **engine) -> PrunePlan:
    """One scan, then drop the `num_remove` lowest-scoring blocks (any metric; BI by default)."""
    scores = scan_blocks(model, windows, metric, **engine)
    removed = lowest_scoring(scores.scores, num_remove, protect)
    return PrunePlan(
        method="shortgpt", removed_blocks=removed, num_blocks_before=len(scores.scores),
        reason=f"the {num_remove} blocks with the lowest {metric} score", metric=metric,
        scores=scores.scores, data=scores.data, scan_seconds=scores.seconds,
    )
