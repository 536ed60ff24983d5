"""A pruning plan: which blocks go and why, computed first, applied second, saved as JSON.

The plan is the contract between scoring and surgery: it can be inspected, edited by hand and
re-applied to the same model (`prunekit prune --plan prunekit_plan.json`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from prunekit.errors import PrunekitError
from prunekit.jsonfiles import read_json_object
from prunekit.methods.registry import method_names, method_spec
from prunekit.models.adapters import ModelAdapter
from prunekit.models.surgery import remove_blocks, validate_block_indices
from prunekit.provenance import PLAN_FILE, library_versions

PLAN_FORMAT = 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_stage(stage) -> bool:
    return (
        isinstance(stage, dict)
        and isinstance(stage.get("method"), str)
        and isinstance(stage.get("details") or {}, dict)
        and isinstance(stage.get("config") or {}, dict)
    )


def _check_calibration(recorded: dict) -> None:
    """The fields a LIAR stage's rerun reads back to make the same calibration windows again."""
    for name, kind in (("windows", int), ("seq_len", int), ("seed", int), ("text_field", str), ("content", str)):
        value = recorded.get(name)
        wrong = not isinstance(value, kind) or isinstance(value, bool) or (kind is int and name != "seed" and value < 1)
        if value is not None and wrong:
            wanted = "text" if kind is str else "a positive whole number"
            raise PrunekitError(f"plan calibration {name} must be {wanted}, not {value!r:.40}")


def read_plan_json(path: str | Path) -> dict:
    """The plan JSON at `path`, or in the checkpoint directory `path`."""
    path = Path(path)
    return read_json_object(path / PLAN_FILE if path.is_dir() else path, "plan")


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
    seconds_before_resume: float = 0.0  # a resumed iterative run: the share of scan_seconds spent by the processes before it
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
        depth = [name for name in method_names() if method_spec(name).removes_blocks]  # a record of removed blocks
        if method not in method_names():
            raise PrunekitError(f"plan method '{method}' is unknown; re-applicable plans are {', '.join(depth)}")
        if method not in depth:
            reapplicable = ", ".join(name for name in depth if method_spec(name).reapply is not None)
            raise PrunekitError(
                f"a {method} plan cannot be re-applied: {method_spec(method).why_not_reapplicable}; only {reapplicable} "
                "plans (blocks to remove) can"
            )
        missing = [k for k in ("removed_blocks", "num_blocks_before") if k not in data]
        if missing:
            raise PrunekitError(f"plan is missing {', '.join(missing)}; pass a prunekit_plan.json written by prunekit prune")
        blocks, count = data["removed_blocks"], data["num_blocks_before"]
        if not _is_int(count) or count < 1:
            raise PrunekitError(f"plan num_blocks_before must be a positive whole number, not {json.dumps(count)}")
        if not isinstance(blocks, list) or not all(_is_int(b) for b in blocks):
            raise PrunekitError(f"plan removed_blocks must be a list of block indices (whole numbers), not {json.dumps(blocks)[:60]}")
        scores = data.get("scores")
        if scores is not None and (
            not isinstance(scores, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in scores)
        ):
            raise PrunekitError("plan scores must be a list of numbers")
        for name in ("reason", "model"):
            if name in data and not isinstance(data[name], str):
                raise PrunekitError(f"plan {name} must be text")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def load(cls, path: str | Path) -> "PrunePlan":
        return cls.from_dict(read_plan_json(path))


PLAN_FORMAT_STAGES = 2


@dataclass
class Plan:
    """What `prunekit.prune` did: one entry per stage (method, config, details), the parameter counts
    before and after, the library versions and whether the whole plan can be re-applied without data.

    A stage's `details` are the method's own record (for depth methods a PrunePlan's fields, with
    `removed_blocks` in the numbering of that stage's input model); `removed_blocks` here are the
    original model's indices of every block removed by any stage.
    """

    stages: list[dict]
    num_blocks_before: int
    num_blocks_after: int
    removed_blocks: list[int] = field(default_factory=list)
    model: str = ""
    params_before: int | None = None
    params_after: int | None = None
    calibration: dict | None = None  # the calibration windows every stage saw (data, windows, seq_len, tokens)
    versions: dict = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format: int = PLAN_FORMAT_STAGES

    @property
    def method(self) -> str:
        return self.stages[0]["method"] if len(self.stages) == 1 else "recipe"

    @property
    def reapplicable(self) -> bool:
        return all(stage.get("reapplicable") for stage in self.stages)

    @property
    def kept_blocks(self) -> list[int]:
        removed = set(self.removed_blocks)
        return [i for i in range(self.num_blocks_before) if i not in removed]

    def details(self, method: str | None = None) -> dict:
        """The details of the only stage, or of the first stage of `method`."""
        stages = [s for s in self.stages if method is None or s["method"] == method]
        if not stages or (method is None and len(self.stages) > 1):
            raise PrunekitError(f"the plan has {'no ' + method if method else len(self.stages)} stage(s); name the method")
        return stages[0]["details"]

    def followed_by(self, later: "Plan") -> "Plan":
        """This plan with the stages of a later run on its output appended (e.g. `prunekit recover`)."""
        return Plan(
            stages=self.stages + later.stages,
            num_blocks_before=self.num_blocks_before,
            num_blocks_after=later.num_blocks_after,
            removed_blocks=sorted(self.removed_blocks + [self.kept_blocks[i] for i in later.removed_blocks]),
            model=self.model,
            params_before=self.params_before,
            params_after=later.params_after,
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["method"], out["reapplicable"], out["kept_blocks"] = self.method, self.reapplicable, self.kept_blocks
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_depth_plan(cls, plan: PrunePlan) -> "Plan":
        """A one-stage plan around a (format 1) depth plan."""
        details = plan.to_dict()
        return cls(
            stages=[{"method": plan.method, "config": {}, "details": details, "reapplicable": True}],
            num_blocks_before=plan.num_blocks_before,
            num_blocks_after=len(plan.kept_blocks),
            removed_blocks=list(plan.removed_blocks),
            model=plan.model,
            params_before=plan.params_before,
            params_after=plan.params_after,
            versions=plan.versions,
            created=plan.created,
        )

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        """A plan from its JSON (format 2, or a format-1 depth plan), checked field by field."""
        version = data.get("format", PLAN_FORMAT)
        if not _is_int(version) or version < PLAN_FORMAT:
            raise PrunekitError(f"plan format must be {PLAN_FORMAT} or {PLAN_FORMAT_STAGES}, not {json.dumps(version)[:40]}")
        if version > PLAN_FORMAT_STAGES:
            raise PrunekitError(f"plan format {version} is newer than this prunekit reads ({PLAN_FORMAT_STAGES}); upgrade prunekit")
        if version < PLAN_FORMAT_STAGES or "stages" not in data:
            return cls.from_depth_plan(PrunePlan.from_dict(data))
        stages = data["stages"]
        if not isinstance(stages, list) or not stages or not all(_is_stage(s) for s in stages):
            raise PrunekitError(
                "plan stages must be a non-empty list of {method, config, details} with method text and config and details "
                "objects; pass a prunekit_plan.json written by prunekit prune"
            )
        for name in ("num_blocks_before", "num_blocks_after"):
            if not _is_int(data.get(name)) or data[name] < 1:
                raise PrunekitError(f"plan {name} must be a positive whole number, not {json.dumps(data.get(name))}")
        removed = data.get("removed_blocks", [])
        if not isinstance(removed, list) or not all(_is_int(b) for b in removed):
            raise PrunekitError("plan removed_blocks must be a list of block indices (whole numbers)")
        for name, kind in (("versions", dict), ("calibration", dict), ("model", str)):
            if data.get(name) is not None and not isinstance(data[name], kind):
                raise PrunekitError(f"plan {name} must be {'text' if kind is str else 'an object'}, not {json.dumps(data[name])[:40]}")
        _check_calibration(data.get("calibration") or {})
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def check_model(self, num_blocks: int) -> None:
        """Refuse a model other than the one the plan was made for, before any stage runs."""
        if num_blocks != self.num_blocks_before:
            raise PrunekitError(f"the plan was made for a model with {self.num_blocks_before} blocks, this one has {num_blocks}")

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        return cls.from_dict(read_plan_json(path))
