"""What a job leaves in its run directories when it fails: nothing, unless it saved something to resume from.

A run that stops before its first checkpoint has nothing worth keeping, and a run directory left behind
would make the retry the error message advises fail with "already holds a run". One that fails later
keeps its checkpoints, and its error says how to continue or start over. Each run directory is also
locked while the job runs, so two processes never train into one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from prunekit.errors import ComputationError, ParameterError, PrunekitError
from prunekit.models.export import claim_output, release_output
from prunekit.recovery.checkpoints import CHECKPOINT_PREFIX, RUN_FILE, TRAINER_FILE, RecoveryInterrupted

# what prunekit writes in a run directory (a recovery's run.json and checkpoints, a job's stage-N folders,
# IteRABRe's state, iteration checkpoints and cached recovery data); nothing else there is ever removed
RUN_ENTRIES = (RUN_FILE, "state.json", "recovery_data.safetensors", "stage-*", f"{CHECKPOINT_PREFIX}*", f".{CHECKPOINT_PREFIX}*", ".*.tmp")
ITERATION_WEIGHTS = "model.safetensors"  # an IteRABRe iteration's checkpoint


def saved_checkpoints(path: Path) -> list[Path]:
    """Every finished checkpoint below `path`: a recovery's (with its trainer state) or an iteration's (with weights)."""
    if not path.is_dir():
        return []
    return sorted(
        found
        for found in path.rglob(f"{CHECKPOINT_PREFIX}*")
        if found.is_dir() and ((found / TRAINER_FILE).is_file() or (found / ITERATION_WEIGHTS).is_file())
    )


def _entries(path: Path) -> set[str] | None:
    return set(os.listdir(path)) if path.is_dir() else None


def _clear_run_entries(path: Path, before: set[str] | None) -> None:
    """Remove what this job's run wrote in `path`: the run's own entries that were not there before it started
    (`before`: the names there then, None if `path` did not exist); the folder goes too when the job made it."""
    if not path.is_dir():
        return
    for pattern in RUN_ENTRIES:
        for entry in path.glob(pattern):
            if before is not None and entry.name in before:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    if before is None and not any(path.iterdir()):
        path.rmdir()


def _with_note(error: Exception, note: str) -> Exception:
    """The same kind of error (the CLI's exit code follows it) with `note` appended to its one line."""
    if isinstance(error, ParameterError):
        return ParameterError(error.parameter, f"{error.detail}; {note}")
    return (ComputationError if isinstance(error, ComputationError) else PrunekitError)(f"{error}; {note}")


@contextlib.contextmanager
def run_directories(paths: list[str | Path], resume: bool = False) -> Iterator[None]:
    """Lock the job's run directories while it runs. `resume` with none of them holding a run is refused.
    On failure (an error or a signal, but not a stop that saved a checkpoint) each directory without a saved
    checkpoint is cleared of what the run wrote; one with a checkpoint is kept and the error says so."""
    paths = [Path(p).expanduser().resolve() for p in paths]
    for path in paths:
        if path.exists() and not path.is_dir():
            raise PrunekitError(f"run directory {path} is a file; name a directory (`run_dir`)")
    if resume and paths and not any(path.is_dir() and any(path.iterdir()) for path in paths):
        raise PrunekitError(f"nothing to resume in {paths[0]}: it holds no run; start the run without `resume`")
    before = {path: _entries(path) for path in paths}
    for path in paths:
        claim_output(path)
    try:
        yield
    except RecoveryInterrupted:
        raise
    except BaseException as error:
        kept = []
        for path in paths:
            found = saved_checkpoints(path)
            if found:
                kept.append(f"{path} keeps {found[-1].relative_to(path)}")
            else:
                _clear_run_entries(path, before[path])
        if kept and isinstance(error, (PrunekitError, ComputationError)):
            raise _with_note(error, f"{'; '.join(kept)}: continue with `resume`, or start afresh with `overwrite_run`") from error
        raise
    finally:
        for path in paths:
            release_output(path)
