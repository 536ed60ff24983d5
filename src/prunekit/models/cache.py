"""Where prunekit keeps converted models (GGUF -> safetensors, unpacked encoders): PRUNEKIT_CACHE or ~/.cache/prunekit.

Converted GGUF files are keyed by their content (size and a hash of samples spread over the file), not by
their path, so every clone and virtual environment reuses one conversion; `prunekit cache` lists the
entries and their sizes, `prunekit cache --clear` removes them.

PRUNEKIT_CACHE may point anywhere, so prunekit deletes only what it can prove it wrote: the cache's root
holds a marker file, and every entry holds one of its own, written inside the entry before it is renamed
into place (an entry without one is unfinished or not prunekit's and is never deleted).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from prunekit.errors import PrunekitError
from prunekit.fingerprints import sampled_digest

SAMPLE_BYTES = 1 << 20  # hashed at the start, at the end and at 14 places between
SAMPLES = 16
ROOT_MARKER = ".prunekit-cache"  # in the root: this folder is a prunekit cache
ENTRY_MARKER = ".prunekit-cache-entry"  # in each entry: prunekit wrote this folder, and finished writing it
KINDS = ("gguf", "assembled", "encoders", "fit-library")  # the folders entries live in


def cache_root() -> Path:
    """PRUNEKIT_CACHE, or ~/.cache/prunekit when it is not set; set but empty, or naming a file, is refused."""
    value = os.environ.get("PRUNEKIT_CACHE")
    if value is None:
        return Path.home() / ".cache" / "prunekit"
    if not value.strip():
        raise PrunekitError("PRUNEKIT_CACHE is set but empty; unset it (the cache is then ~/.cache/prunekit) or name a directory")
    root = Path(value).expanduser()
    if root.exists() and not root.is_dir():
        raise PrunekitError(f"PRUNEKIT_CACHE={value} is a file, not a directory; name a directory for prunekit's converted models")
    return root


def is_prunekit_cache(root: Path) -> bool:
    """Whether prunekit made `root`: it holds the marker, or only the kind folders prunekit makes (and hidden lock
    or temporary files), as a cache written before the marker existed does. Such a cache is adopted (marked); its
    unmarked entries are never deleted, only converted again when used."""
    if (root / ROOT_MARKER).is_file():
        return True
    names = [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
    return bool(names) and all(p.name in KINDS and p.is_dir() and not p.is_symlink() for p in names)


def writable_cache_dir(kind: str) -> Path:
    """The folder of one kind of entry, made (with the root's marker) and checked writable before any slow
    conversion; a folder that holds other things and no marker is refused as a cache."""
    root = cache_root()
    if root.is_dir() and any(root.iterdir()) and not is_prunekit_cache(root):
        raise PrunekitError(
            f"PRUNEKIT_CACHE={root} holds files that prunekit did not write; point PRUNEKIT_CACHE at an empty or new directory"
        )
    folder = root / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = root / ROOT_MARKER
        if not marker.is_file():
            marker.write_text(json.dumps({"prunekit_cache": 1, "kinds": list(KINDS)}) + "\n")
        Path(tempfile.mkdtemp(prefix=".probe-", dir=folder)).rmdir()
    except OSError as error:
        raise PrunekitError(
            f"cannot write prunekit's cache in {folder} ({error.strerror or error}); set PRUNEKIT_CACHE to a writable directory"
        ) from None
    return folder


def mark_entry(directory: Path, source: str) -> None:
    """Written last inside an entry's temporary folder: the entry is prunekit's and complete."""
    (Path(directory) / ENTRY_MARKER).write_text(json.dumps({"source": str(source)}) + "\n")


def is_complete_entry(directory: Path) -> bool:
    return (Path(directory) / ENTRY_MARKER).is_file()


def content_key(path: str | os.PathLike) -> str:
    """A key that two copies of one file share and two different files (almost surely) do not, read in
    16 MiB at most: the size and the SHA-256 of 16 evenly spread 1 MiB samples (the whole of a smaller file)."""
    return sampled_digest(path, SAMPLES, SAMPLE_BYTES)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.stat().st_size if path.exists() else 0


@dataclass
class CacheListing:
    """What is in the cache: prunekit's own entries (path, bytes, largest first) and what it leaves alone."""

    root: Path
    entries: list[tuple[Path, int]] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)  # unmarked: unfinished, from an older version, or not prunekit's

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.entries)


def cache_entries() -> CacheListing:
    """The entries under the cache's kind folders; only those carrying prunekit's marker count as its own."""
    root = cache_root()
    listing = CacheListing(root)
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") and entry.name.endswith(".prunekit-lock"):
                continue
            if entry.is_dir() and not entry.is_symlink() and is_complete_entry(entry):
                listing.entries.append((entry, _size(entry)))
            else:
                listing.foreign.append(entry)
    listing.entries.sort(key=lambda item: -item[1])
    return listing


def _remove_tree(path: Path) -> list[str]:
    """rmtree that goes on past what it cannot delete and returns why each part stayed."""
    errors: list[str] = []

    def note(function, where, error) -> None:
        error = error[1] if isinstance(error, tuple) else error  # onerror passes exc_info, onexc the exception
        errors.append(f"{where}: {getattr(error, 'strerror', None) or error}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=note)
    else:
        shutil.rmtree(path, onerror=note)
    return errors


@dataclass
class Cleared:
    freed: int
    removed: list[Path]
    failed: list[tuple[Path, str]]  # entries that are still there, and why
    foreign: list[Path]


def clear_cache() -> Cleared:
    """Remove prunekit's own entries; anything without its marker is kept and named. A folder that is not a
    prunekit cache is refused whole. Counts only what is really gone."""
    root = cache_root()
    if not root.is_dir():
        return Cleared(0, [], [], [])
    if not is_prunekit_cache(root):
        raise PrunekitError(
            f"{root} is not a prunekit cache (no {ROOT_MARKER} marker); prunekit clears only folders it made; check PRUNEKIT_CACHE"
        )
    listing = cache_entries()
    cleared = Cleared(0, [], [], listing.foreign)
    for entry, size in listing.entries:
        errors = _remove_tree(entry)
        if entry.exists():
            cleared.failed.append((entry, errors[0] if errors else "still present"))
            cleared.freed += size - _size(entry)
        else:
            cleared.removed.append(entry)
            cleared.freed += size
    return cleared
