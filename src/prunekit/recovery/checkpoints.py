"""Checkpoints inside one training run, so a run killed at any step continues where it stopped.

A run directory holds `run.json` (the settings that decide the result, checked on resume) and
`checkpoint-NNNNNNN/` folders written by accelerate's `save_state` (trainable weights, optimizer,
scheduler, every RNG) plus the data position and the loss log; a sharded (FSDP) run keeps its model,
optimizer and schedule in a torch distributed checkpoint instead, one set of shards per process.
Each checkpoint is written under a temporary name and renamed when complete, then all but the
last `keep` are deleted, so an interruption or a full disk never damages the last good one.
SIGINT and SIGTERM during training finish the current step, save, and raise `RecoveryInterrupted`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError

from prunekit.errors import ParameterError, PrunekitError
from prunekit.jsonfiles import read_json_object, write_json_atomically

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
TRAINER_FILE = "trainer_state.json"
DATA_FILE = "data_state.pt"
SHARDED_DIRECTORY = "sharded"  # FSDP runs: each process's model and optimizer shards (torch distributed checkpoint)
CHECKPOINT_PREFIX = "checkpoint-"
RUN_FORMAT = 1
DEFAULT_SAVE_SECONDS = 600.0  # without save_every: a checkpoint about every ten minutes of training


class RecoveryInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; `resume` continues it."""

    def __init__(self, checkpoint: Path, step: int, steps: int, signal_name: str):
        self.checkpoint, self.step, self.steps, self.signal_name = checkpoint, step, steps, signal_name
        super().__init__(f"{signal_name}: recovery saved step {step} of {steps} in {checkpoint}")


@dataclass
class Checkpointing:
    """Where and how often a recovery run saves itself. `save_every`: tokens between checkpoints
    (None: about every ten minutes of training); `resume`: continue the run saved in `path`;
    `overwrite`: start afresh in a `path` that holds another run."""

    path: str | os.PathLike
    save_every: int | None = None
    resume: bool = False
    overwrite: bool = False
    keep: int = 2

    def __post_init__(self):
        if self.save_every is not None and (isinstance(self.save_every, bool) or not isinstance(self.save_every, int)):
            raise ParameterError("save_every", f"must be a whole number of tokens, got {self.save_every!r}")
        if self.save_every is not None and self.save_every < 1:
            raise ParameterError("save_every", f"{self.save_every} must be at least 1 token")
        if self.keep < 1:
            raise ParameterError("keep", f"{self.keep} must be at least 1")
        self.path = Path(self.path).expanduser().resolve()

    def inside(self, name: str) -> Checkpointing:
        """The same settings for a run in a sub-directory (one per recovery stage of a longer job)."""
        return replace(self, path=Path(self.path) / name)


def model_fingerprint(model) -> str:
    """A short hash of the parameters' names, shapes, dtypes and leading values: another model (or the same
    model pruned differently) gets another fingerprint; the same checkpoint loaded again the same one."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        head = tensor.detach().reshape(-1)[:64].to("cpu", torch.float64)
        digest.update(head.numpy().tobytes())
    return digest.hexdigest()[:16]


def _checkpoints(path: Path) -> list[Path]:
    found = [p for p in path.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()]
    return sorted((p for p in found if (p / TRAINER_FILE).is_file()), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def saved_run_settings(path: str | os.PathLike) -> dict:
    """The settings a recovery run in `path` was started with (what a resume is checked against)."""
    return read_json_object(Path(path) / RUN_FILE, "recovery run").get("settings", {})


def has_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` holds a recovery run with at least one finished checkpoint to resume from."""
    path = Path(path)
    return (path / RUN_FILE).is_file() and bool(_checkpoints(path))


class RunCheckpoints:
    """The checkpoints of one training run, used from inside the trainer."""

    def __init__(self, settings: Checkpointing, accelerator, run_settings: dict, defaults: dict | None = None):
        """`defaults`: the value a setting has when a run saved by an older version does not record it."""
        self.settings, self.accelerator, self.run_settings = settings, accelerator, run_settings
        self.defaults = defaults or {}
        self.sharded_state = None  # set by the trainer for a sharded run (sharding.ShardedTrainingState)
        self.path: Path = settings.path
        self.every_steps: int | None = None
        self.started = time.perf_counter()

    # -- the run directory -------------------------------------------------------------------------
    def open(self) -> dict | None:
        """Check the directory against this run; returns the latest checkpoint's trainer state to resume from (or None)."""
        run_file = self.path / RUN_FILE
        if self.settings.resume:
            if not run_file.is_file():
                raise PrunekitError(f"nothing to resume in {self.path}: no {RUN_FILE}; start the run without resume")
            self._check_same(saved_run_settings(self.path))
            found = _checkpoints(self.path)
            if found:
                return read_json_object(found[-1] / TRAINER_FILE, "recovery checkpoint") | {"directory": str(found[-1])}
            status = read_json_object(run_file, "recovery run").get("status")
            log.warning(
                "%s holds no checkpoint to resume from (%s); this training starts over with the same settings",
                self.path,
                "it finished earlier and its checkpoints were removed" if status == "finished" else "it stopped before its first",
            )
        occupied = self.path.is_dir() and any(self.path.iterdir())
        self.accelerator.wait_for_everyone()  # every process looks before the main one writes
        if occupied and not (self.settings.overwrite or self.settings.resume):
            raise PrunekitError(f"{self.path} already holds a recovery run; continue it with `resume` or start afresh with `overwrite_run`")

        def reset() -> None:
            if self.path.exists():
                if not self.path.is_dir():
                    raise PrunekitError(f"run directory {self.path} is a file; name a directory")
                if any(self.path.iterdir()) and not run_file.is_file():
                    raise PrunekitError(f"{self.path} holds files that are not a recovery run; choose an empty or new `run_dir`")
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
            write_json_atomically(run_file, {"format": RUN_FORMAT, "settings": self.run_settings, "status": "running"})

        self._on_main(reset)
        return None

    def _check_same(self, saved: dict) -> None:
        saved = {**{k: v for k, v in self.defaults.items() if k in self.run_settings}, **saved}
        if changed := changed_settings(saved, self.run_settings):
            raise PrunekitError(f"cannot resume {self.path} with different settings ({changed}); use the original ones or start afresh")

    def restore(self, trainer_state: dict, data) -> None:
        """Weights, optimizer, scheduler and RNG from accelerate's state; the data position from ours."""
        directory = Path(trainer_state["directory"])
        _check_random_states(directory, self.accelerator.process_index)
        try:
            self.accelerator.load_state(str(directory))
            if self.sharded_state is not None:
                self.sharded_state.load(directory / SHARDED_DIRECTORY)
            data.load_state_dict(torch.load(directory / DATA_FILE, weights_only=True))
        except (OSError, RuntimeError, KeyError, ValueError, SafetensorError) as error:
            raise PrunekitError(
                f"checkpoint {directory} cannot be read ({str(error).splitlines()[0][:160]}); delete it to use the one before"
            ) from error

    def _on_main(self, work) -> None:
        if self.accelerator.is_main_process:
            work()
        self.accelerator.wait_for_everyone()

    # -- when to save ------------------------------------------------------------------------------
    def due(self, step: int, tokens_per_step: int, first_step: int = 0) -> bool:
        """Whether to save after `step` (1-based); without save_every, the interval is set from the speed of this
        process's first steps (`first_step`: where a resumed run started, so the steps of earlier processes do not count)."""
        if self.every_steps is None:
            if self.settings.save_every is not None:
                self.every_steps = max(1, self.settings.save_every // tokens_per_step)
            else:
                elapsed, done = time.perf_counter() - self.started, step - first_step
                if elapsed < 30 and done < 20:
                    return False
                every = torch.tensor([max(1, int(DEFAULT_SAVE_SECONDS / (elapsed / done)))])
                if self.accelerator.num_processes > 1:  # every process must agree on when to save
                    from accelerate.utils import broadcast

                    every = broadcast(every.to(self.accelerator.device)).cpu()
                self.every_steps = int(every)
        return step % self.every_steps == 0

    # -- saving ------------------------------------------------------------------------------------
    def save(self, step: int, history: list[dict], data, extra: dict) -> Path:
        """Write checkpoint `step` under a temporary name, rename it, then drop all but the last `keep`."""
        final = self.path / f"{CHECKPOINT_PREFIX}{step:07d}"
        partial = self.path / f".{final.name}.partial"
        data_state = data.state_dict()
        try:
            self._on_main(lambda: shutil.rmtree(partial, ignore_errors=True))
            with _quiet_about_tied_weights():
                self.accelerator.save_state(str(partial), safe_serialization=True)
            if self.sharded_state is not None:
                (partial / SHARDED_DIRECTORY).mkdir(parents=True, exist_ok=True)
                self.sharded_state.save(partial / SHARDED_DIRECTORY)

            def finish() -> None:
                torch.save(data_state, partial / DATA_FILE)
                write_json_atomically(partial / TRAINER_FILE, {"step": step, "history": history, **extra})
                shutil.rmtree(final, ignore_errors=True)
                os.replace(partial, final)

            self._on_main(finish)
        except OSError as error:
            self._on_main(lambda: shutil.rmtree(partial, ignore_errors=True))
            kept = _checkpoints(self.path)
            last = f"the last good checkpoint {kept[-1]} is intact" if kept else "no earlier checkpoint exists"
            raise PrunekitError(
                f"could not save a checkpoint in {self.path} ({error.strerror or error}); {last}; free disk space and resume"
            ) from error
        self._on_main(lambda: [shutil.rmtree(old, ignore_errors=True) for old in _checkpoints(self.path)[: -self.settings.keep]])
        return final

    def finish(self, status: str = "finished") -> None:
        """Mark the run finished and remove its checkpoints (the trained model is the result)."""

        def mark() -> None:
            for old in _checkpoints(self.path):
                shutil.rmtree(old, ignore_errors=True)
            write_json_atomically(self.path / RUN_FILE, {"format": RUN_FORMAT, "settings": self.run_settings, "status": status})

        self._on_main(mark)


class _TiedWeightsNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


@contextmanager
def _quiet_about_tied_weights():
    """accelerate warns at every save of a model whose head shares the embedding (SmolLM2, Gemma, Llama 3.2) that it
    dropped the head's name and asks to check the reload; loading the state ties them again (tested), so in a long
    run the warning repeated at every checkpoint would only alarm."""
    note, source = _TiedWeightsNote(), logging.getLogger("accelerate.utils.other")
    source.addFilter(note)
    try:
        yield
    finally:
        source.removeFilter(note)


def _differences(saved, current, where: str) -> list[str]:
    """'field: old -> new' for every leaf that differs; a field the saved record lacks (an older version did
    not record it) is not compared."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current), key=str)
        return [d for k in keys if k in saved for d in _differences(saved[k], current.get(k), f"{where}.{k}" if where else str(k))]
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        return [d for i, (a, b) in enumerate(zip(saved, current)) for d in _differences(a, b, f"{where}[{i}]")]
    return [] if saved == current else [f"{where}: {_short(saved)} -> {_short(current)}"]


def changed_settings(saved: dict, current: dict, may_differ: tuple[str, ...] = ()) -> str:
    """The settings of a resumed run that differ from the saved ones, each named by its full path
    (`data.content[0]`), so two values that print alike are told apart; '' when none differ."""
    differences = _differences({k: v for k, v in saved.items() if k not in may_differ}, current, "")
    shown = differences[:4] + ([f"and {len(differences) - 4} more"] if len(differences) > 4 else [])
    return "; ".join(shown)


def _check_random_states(directory: Path, process: int) -> None:
    """accelerate skips a random state it cannot read with a log line only, and the resumed run then draws other
    dropout masks and data than an unbroken one: refuse it like any other damaged part of the checkpoint."""
    states = directory / f"random_states_{process}.pkl"
    try:
        torch.load(states, weights_only=False)  # accelerate's own file, read as accelerate reads it
    except Exception as error:  # noqa: BLE001 - unpickling raises many types for a damaged file
        raise PrunekitError(
            f"checkpoint {directory} cannot be read ({states.name}: {str(error).splitlines()[0][:120] or type(error).__name__}); "
            "delete it to use the one before"
        ) from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class StopSignals:
    """While active, SIGINT and SIGTERM only set `received`; the trainer saves and stops after its step.
    A second signal gets the previous handler (so a second Ctrl-C stops at once)."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def any_received(self, accelerator) -> bool:
        """Whether any process got a signal (all of them must stop at the same step)."""
        flag = torch.tensor([1 if self.received else 0])
        if accelerator.num_processes > 1:
            from accelerate.utils import reduce

            flag = reduce(flag.to(accelerator.device), reduction="sum").cpu()
        return bool(int(flag))
