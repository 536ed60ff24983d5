"""A pruning plan: which blocks go and why, computed first, applied second, saved as JSON.

The plan is the contract between scoring and surgery: it can be inspected, edited by hand and
re-applied to the same model (`prunekit prune --plan prunekit_plan.json`).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from prunekit.errors import PrunekitError
from prunekit.jsonfiles import read_json_object
from prunekit.models.adapters import ModelAdapter
from prunekit.models.surgery import remove_blocks, validate_block_indices

PLAN_FILE = "prunekit_plan.json"
PLAN_FORMAT = 1
REAPPLICABLE = ("shortgpt", "angular", "sleb", "iterabre")  # iterabre's plan is a valid record; the CLI says why it is not re-run
NOT_REAPPLICABLE = {
    "liar": "its reconstruction is computed from calibration data, so run it again with the same settings and seed",
    "flexigpt": "its adapters come from the weights and training, so run it again",
    "extend": "its adapters come from training, so run it again",
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def library_versions() -> dict:
    import torch
    import transformers

    from prunekit import __version__

    return {"prunekit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


@dataclass
class PrunePlan:
    """Blocks to remove (original indices) and the evidence behind the choice."""

    method: str
    removed_blocks: list[int]
    num_blocks_before: int
    reason: str = ""
    metric: str | None = None
    scores: list[float] | None = None
    data: dict | None = None
    steps: list[dict] = field(default_factory=list)  # iterative methods: one entry per removal
    model: str = ""
    params_before: int | None = None
    params_after: int | None = None
    scan_seconds: float | None = None
    versions: dict = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format: int = PLAN_FORMAT

    def __post_init__(self) -> None:
        self.removed_blocks = validate_block_indices(self.removed_blocks, self.num_blocks_before)

    @property
    def kept_blocks(self) -> list[int]:
        removed = set(self.removed_blocks)
        return [i for i in range(self.num_blocks_before) if i not in removed]

    def apply(self, model) -> list[int]:
        """Remove the planned blocks from `model` in place; refuses a model of another depth."""
        num_blocks = ModelAdapter(model).num_blocks
        if num_blocks != self.num_blocks_before:
            raise PrunekitError(f"the plan was made for a model with {self.num_blocks_before} blocks, this one has {num_blocks}")
        return remove_blocks(model, self.removed_blocks)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kept_blocks"] = self.kept_blocks
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> "PrunePlan":
        """A plan from its JSON, checked field by field (a hand-edited plan gets a one-line error, not a traceback)."""
        method = data.get("method")
        if not isinstance(method, str):
            raise PrunekitError("plan has no method name; pass a prunekit_plan.json written by prunekit prune")
        if method in NOT_REAPPLICABLE:
            raise PrunekitError(f"a {method} plan cannot be re-applied: {NOT_REAPPLICABLE[method]}; only shortgpt, angular and sleb "
                                "plans (blocks to remove) can")
        if method not in REAPPLICABLE:
            raise PrunekitError(f"plan method '{method}' is unknown; re-applicable plans are {', '.join(REAPPLICABLE)}")
        missing = [k for k in ("removed_blocks", "num_blocks_before") if k not in data]
        if missing:
            raise PrunekitError(f"plan is missing {', '.join(missing)}; pass a prunekit_plan.json written by prunekit prune")
        blocks, count = data["removed_blocks"], data["num_blocks_before"]
        if not _is_int(count) or count < 1:
            raise PrunekitError(f"plan num_blocks_before must be a positive whole number, not {json.dumps(count)}")
        if not isinstance(blocks, list) or not all(_is_int(b) for b in blocks):
            raise PrunekitError(f"plan removed_blocks must be a list of block indices (whole numbers), not {json.dumps(blocks)[:60]}")
        scores = data.get("scores")
        if scores is not None and (not isinstance(scores, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in scores)):
            raise PrunekitError("plan scores must be a list of numbers")
        for name in ("reason", "model"):
            if name in data and not isinstance(data[name], str):
                raise PrunekitError(f"plan {name} must be text")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def load(cls, path: str | Path) -> "PrunePlan":
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        return cls.from_dict(read_json_object(path, "plan"))
