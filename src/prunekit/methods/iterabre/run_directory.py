"""A resumable iterative run on disk: the state log plus the checkpoint of the last finished iteration.

Order of writes keeps it crash-safe: the new checkpoint is written under a temporary name and
renamed, then `state.json` is replaced atomically to point at it, then the older checkpoint is
deleted. An interruption at any point leaves a state file that names a complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prunekit.errors import PrunekitError
from prunekit.jsonfiles import read_json_object, write_json_atomically
from prunekit.models.export import atomic_output_dir
from prunekit.models.tied_tensors import truly_missing, unique_tensors
from prunekit.recovery.checkpoints import changed_settings
from prunekit.recovery.distributed import on_main_process

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.safetensors"
RECOVERY_DATA_FILE = "recovery_data.safetensors"
RUN_FORMAT = 1


def _write_json_atomically(path: Path, payload: dict) -> None:
    on_main_process(lambda: write_json_atomically(path, payload))


def _finished(state: dict) -> dict:
    """The state without `pending`, the removal an unfinished iteration was recovering from."""
    return {k: v for k, v in state.items() if k != "pending"}


class RunDirectory:
    """`DIR/state.json`, `DIR/checkpoint-NNN/model.safetensors` and cached recovery data."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.is_file()

    def start(self, settings: dict, overwrite: bool = False) -> dict:
        """A fresh state; refuses a directory holding another run unless `overwrite`."""
        if self.exists() and not overwrite:
            raise PrunekitError(
                f"{self.path} already holds a run; continue it with `resume` (`run_dir` {self.path}) or pass `overwrite_run`"
            )

        def reset() -> None:
            if self.path.exists() and overwrite:
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True, exist_ok=True)

        on_main_process(reset)
        state = {"format": RUN_FORMAT, "settings": settings, "iterations": [], "checkpoint": None, "status": "running"}
        _write_json_atomically(self.state_path, state)
        return state

    def load(self, settings: dict, may_differ: tuple[str, ...] = ()) -> dict:
        """The saved state, checked against this run's settings (those in `may_differ` may change)."""
        if not self.exists():
            raise PrunekitError(f"nothing to resume in {self.path}: no {STATE_FILE}; start the run without `resume`")
        state = read_json_object(self.state_path, "run state")
        if changed := changed_settings(state.get("settings", {}), settings, may_differ):
            raise PrunekitError(f"cannot resume {self.path} with different settings ({changed}); use the original ones")
        return state

    def save_iteration(self, state: dict, entry: dict, model) -> dict:
        """Checkpoint the model, then record the iteration; the previous checkpoint is then dropped."""
        name = f"checkpoint-{entry['iteration']:03d}"
        weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

        def write_weights() -> None:
            with atomic_output_dir(self.path / name) as tmp:
                save_file(unique_tensors(weights), str(tmp / WEIGHTS_FILE))

        on_main_process(write_weights)
        previous = state.get("checkpoint")
        state = {**_finished(state), "iterations": [*state["iterations"], entry], "checkpoint": name}
        _write_json_atomically(self.state_path, state)
        if previous and previous != name:
            on_main_process(lambda: shutil.rmtree(self.path / previous, ignore_errors=True))
        return state

    def record_iteration(self, state: dict, entry: dict) -> dict:
        """Record an iteration that trained nothing before any checkpoint exists: its model is the input
        with the recorded blocks removed, which a resume rebuilds, so no weights are written."""
        if state.get("checkpoint"):
            raise PrunekitError("an iteration after a checkpoint must be saved with its weights")
        state = {**_finished(state), "iterations": [*state["iterations"], entry]}
        _write_json_atomically(self.state_path, state)
        return state

    def update(self, state: dict, **fields) -> dict:
        state = {**state, **fields}
        _write_json_atomically(self.state_path, state)
        return state

    def load_weights(self, state: dict, model) -> None:
        """Load the last finished iteration's weights into `model` (already pruned to its shape)."""
        file = self.path / state["checkpoint"] / WEIGHTS_FILE
        if not file.is_file():
            raise PrunekitError(f"checkpoint {file} is missing; the run directory was changed by hand")
        missing, unexpected = model.load_state_dict(load_file(str(file)), strict=False)
        missing = truly_missing(model, missing)
        if unexpected or missing:
            raise PrunekitError(f"checkpoint {file} does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def save_recovery_data(self, input_ids: torch.Tensor, description: str) -> None:
        def write() -> None:
            tmp = self.path / f".{RECOVERY_DATA_FILE}.tmp"
            save_file({"input_ids": input_ids.contiguous()}, str(tmp), metadata={"description": description})
            os.replace(tmp, self.path / RECOVERY_DATA_FILE)

        on_main_process(write)

    def load_recovery_data(self) -> tuple[torch.Tensor, str] | None:
        file = self.path / RECOVERY_DATA_FILE
        if not file.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(file), "pt") as handle:
            description = (handle.metadata() or {}).get("description", "cached recovery data")
        return load_file(str(file))["input_ids"], description
