"""Removal of listed blocks: a structure chosen elsewhere (by `prunekit fit`, or by hand), applied without data."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.errors import ParameterError
from prunekit.methods.depth.removal import check_protected
from prunekit.methods.plan import PrunePlan
from prunekit.models.adapters import ModelAdapter
from prunekit.options import check_types, option


@dataclass
class ListedBlocksConfig:
    """The blocks to remove, by index in the stage's input model."""

    blocks: tuple[int, ...] = option((), "indices of the blocks to remove")

    def check(self) -> None:
        check_types(self)
        if not self.blocks:
            raise ParameterError("blocks", "is missing: list the indices of the blocks to remove")
        if any(isinstance(b, bool) or not isinstance(b, int) for b in self.blocks) or len(set(self.blocks)) != len(self.blocks):
            raise ParameterError("blocks", "must list distinct block indices (whole numbers)")


def run_listed_blocks(model, config: ListedBlocksConfig, context) -> dict:
    num_blocks = ModelAdapter(model).num_blocks
    check_protected(tuple(config.blocks), num_blocks)  # names any index outside the model
    if len(config.blocks) >= num_blocks:
        raise ParameterError("blocks", f"would remove all {num_blocks} blocks; keep at least one")
    plan = PrunePlan(method="blocks", removed_blocks=sorted(config.blocks), num_blocks_before=num_blocks, reason="the listed blocks")
    plan.apply(model)
    unfilled = ("model", "params_before", "params_after", "versions", "created", "format")
    return {key: value for key, value in plan.to_dict().items() if key not in unfilled}
