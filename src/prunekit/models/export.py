"""Writing checkpoints: atomically, never over the input, always loadable by plain transformers."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prunekit.errors import PrunekitError
from prunekit.models.layer_widths import has_layer_widths, record_layer_widths

_CLAIMS: dict[Path, tuple[int, Path]] = {}  # outputs this process is writing: lock file descriptor and path


def _nearest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _lock_path(out_path: Path) -> Path:
    parent = out_path.parent
    if parent.is_dir():
        return parent / f".{out_path.name}.prunekit-lock"
    digest = hashlib.sha1(str(out_path).encode()).hexdigest()[:12]  # the parent is made only at save time
    return _nearest_existing(parent) / f".prunekit-{digest}.lock"


def check_not_over_inputs(out: str | os.PathLike, inputs: list[str | os.PathLike] = ()) -> Path:
    """The one rule every writer keeps: an output is never an input, never inside an input (a file in a
    checkpoint directory) and never above one (a directory that holds an input, which a replacement would
    remove). Returns the resolved output path."""
    out_path = Path(out).expanduser().resolve()
    for source in inputs:
        source_path = Path(source).expanduser().resolve()
        if out_path == source_path:
            raise PrunekitError(f"output {out_path} is the input {source_path}; choose another `out`")
        if source_path in out_path.parents:
            raise PrunekitError(f"output {out_path} is inside the input {source_path}; choose an `out` outside it")
        if out_path in source_path.parents:
            raise PrunekitError(f"output {out_path} holds the input {source_path}, which writing it would replace; choose another `out`")
    return out_path


def with_loaded_from(model, protected: list[str | os.PathLike] = ()) -> list[str | os.PathLike]:
    """`protected` plus the directory `model` was loaded from (its `_name_or_path`, where that exists here):
    an output written from a model never lands on, in or over its own source."""
    loaded_from = getattr(model.config, "_name_or_path", "") or ""
    return [*protected, *([loaded_from] if loaded_from and Path(loaded_from).expanduser().exists() else [])]


def check_output_file(out: str | os.PathLike, overwrite: bool, *, kind: str, example: str, protected: list[str | os.PathLike] = ()) -> Path:
    """Refuse, before any work, a file output that is a directory, exists (unless `overwrite`), lies over an
    input (`protected`, see check_not_over_inputs) or cannot be written; `kind` names it in the message
    ("GGUF", "results") and `example` is a file name to suggest."""
    path = Path(out).expanduser().resolve()
    if path.is_dir():
        raise PrunekitError(f"{kind} output {path} is a directory; name a file such as {path / example}")
    check_not_over_inputs(path, protected)
    if path.exists() and not overwrite:
        raise PrunekitError(f"{kind} output {path} exists; pass `overwrite` or choose another `out`")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise PrunekitError(f"cannot write in {parent}; choose another `out`")
    return path


def claim_output(out_path: Path) -> None:
    """Hold an exclusive lock for writing `out_path` until `release_output` (or the process ends):
    a second run into the same place fails at once instead of replacing a finished result. Under a
    multi-process launch (torchrun, accelerate launch) the main process holds the claim for all."""
    if out_path in _CLAIMS or int(os.environ.get("RANK", "0")) != 0:
        return
    lock = _lock_path(out_path)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:  # e.g. a directory where the lock file goes, or an unwritable place
            raise PrunekitError(f"cannot lock {out_path} through {lock} ({error.strerror}); remove it or choose another `out`") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PrunekitError(f"another prunekit run is writing {out_path}; wait for it to finish or choose another `out`") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its last holder removed the lock file between our open and our lock: take a new one
    _CLAIMS[out_path] = (fd, lock)


def release_output(out_path: Path) -> None:
    claim = _CLAIMS.pop(out_path, None)
    if claim is not None:
        fd, lock = claim
        Path(lock).unlink(missing_ok=True)  # while still holding it; see claim_output
        os.close(fd)


@atexit.register
def release_all_outputs() -> None:
    """Release every claim of this process (a command that stopped early still holds its `--out`)."""
    for out_path in list(_CLAIMS):
        release_output(out_path)


def check_output_dir(
    out: str | os.PathLike, overwrite: bool, protected: list[str | os.PathLike] = (), needed_bytes: int | None = None
) -> Path:
    """Refuse, before any work, an output that cannot or must not be written: a non-empty directory
    (unless overwrite), a path holding an input model, a path under a file, an unwritable place, a
    disk without room for `needed_bytes`, or a place another run is writing (then claims it)."""
    out_path = check_not_over_inputs(out, protected)
    if out_path.exists() and not out_path.is_dir():
        raise PrunekitError(f"output path {out_path} exists and is not a directory; choose another `out`")
    existing = _nearest_existing(out_path.parent)
    if not existing.is_dir():
        raise PrunekitError(f"output path {out_path} is under {existing}, which is a file; choose another `out`")
    try:
        Path(tempfile.mkdtemp(prefix=".prunekit-probe-", dir=existing)).rmdir()
    except OSError as error:
        raise PrunekitError(f"cannot write in {existing} ({error.strerror}); choose another `out`") from error
    if needed_bytes:
        free = shutil.disk_usage(existing).free
        if needed_bytes > free:
            raise PrunekitError(
                f"the output needs about {needed_bytes / 2**30:.1f} GiB but {existing} has {free / 2**30:.1f} GiB free; "
                "free some space or choose another `out`"
            )
    claim_output(out_path)
    if out_path.is_dir() and any(out_path.iterdir()) and not overwrite:
        raise PrunekitError(f"output directory {out_path} is not empty; pass `overwrite` or choose another `out`")
    return out_path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(out_path: Path) -> None:
    """Remove temporary directories of runs into `out_path` that were killed (their pid is gone);
    a backup of the previous output left by a run killed mid-replacement is put back if the output is missing."""
    for stale in out_path.parent.glob(f".{out_path.name}.*-*-*"):
        kind, _, rest = stale.name[len(out_path.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)) or not stale.is_dir():
            continue
        if kind == "old" and not out_path.exists():
            os.rename(stale, out_path)
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable_like_save_pretrained(path: Path) -> None:
    """Temporary files and directories are private (0600/0700); give `path` and everything under it
    the permissions a plain save would (0666/0777 less the umask)."""
    mask = _umask()
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; on success it becomes `out` in one rename.

    A crash, Ctrl-C or SIGTERM leaves `out` as it was (the temporary directory is removed; one left
    by a killed run is removed by the next run into the same place). With `replace=False` an `out`
    that another writer filled meanwhile is never replaced: this run fails instead.
    """
    out_path = Path(out).expanduser().resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-{os.getpid()}-", dir=out_path.parent))
    try:
        yield tmp
        readable_like_save_pretrained(tmp)
        if not replace:
            try:
                os.rename(tmp, out_path)  # replaces only a missing or empty directory
            except OSError as error:
                raise PrunekitError(
                    f"{out_path} was written by another run meanwhile; it was kept and this run's result was discarded"
                ) from error
            return
        backup = None
        if out_path.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.old-{os.getpid()}-", dir=out_path.parent))
            backup.rmdir()
            os.rename(out_path, backup)
        os.rename(tmp, out_path)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def output_dir(
    out: str | os.PathLike, *, overwrite: bool = False, protected: list[str | os.PathLike] = (), needed_bytes: int | None = None
) -> Iterator[Path]:
    """Write a user's output directory: checked and claimed first, filled in a temporary directory,
    renamed into place (over an old one only with `overwrite`), then released. Yields the temporary directory."""
    out_path = check_output_dir(out, overwrite, protected, needed_bytes)
    try:
        with atomic_output_dir(out_path, replace=overwrite) as tmp:
            yield tmp
    finally:
        release_output(out_path)


def strip_gguf_quantizer(model) -> None:
    """A GGUF-loaded model holds dequantized weights but refuses save_pretrained until this is gone."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config") and getattr(model.config.quantization_config, "quant_method", None) == "gguf":
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def write_checkpoint(model, tokenizer, directory: str | os.PathLike, extra_json: dict[str, dict] | None = None) -> None:
    """save_pretrained (safetensors) plus tokenizer, generation config and extra JSON files."""
    directory = Path(directory)
    strip_gguf_quantizer(model)
    if has_layer_widths(model.config):
        record_layer_widths(model)  # blocks may have been removed since the widths were recorded
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    for name, payload in (extra_json or {}).items():
        (directory / name).write_text(json.dumps(payload, indent=2) + "\n")


def save_model(
    model,
    tokenizer,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    extra_json: dict[str, dict] | None = None,
    protected: list[str | os.PathLike] = (),
) -> Path:
    """Save a (pruned) model atomically to `out`; returns the final path."""
    with output_dir(out, overwrite=overwrite, protected=protected) as tmp:
        write_checkpoint(model, tokenizer, tmp, extra_json)
    return Path(out).expanduser().resolve()
