"""Where prunekit keeps converted models (GGUF -> safetensors, unpacked encoders): PRUNEKIT_CACHE or ~/.cache/prunekit.

Converted GGUF files are keyed by their content (size and a hash of samples spread over the file), not by
their path, so every clone and virtual environment reuses one conversion; `prunekit cache` lists the
entries and their sizes, `prunekit cache --clear` removes them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

SAMPLE_BYTES = 1 << 20  # hashed at the start, at the end and at 14 places between
SAMPLES = 16


def cache_root() -> Path:
    return Path(os.environ.get("PRUNEKIT_CACHE", Path.home() / ".cache" / "prunekit"))


def content_key(path: str | os.PathLike) -> str:
    """A key that two copies of one file share and two different files (almost surely) do not, read in
    16 MiB at most: the size and the SHA-256 of 16 evenly spread 1 MiB samples (the whole of a smaller file)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= SAMPLE_BYTES * SAMPLES:
            digest.update(handle.read())
        else:
            for index in range(SAMPLES):
                handle.seek((size - SAMPLE_BYTES) * index // (SAMPLES - 1))
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def cache_entries() -> list[tuple[Path, int]]:
    """(path, bytes) of every cached model, largest first."""
    root = cache_root()
    entries = [entry for kind in sorted(root.iterdir()) if kind.is_dir() for entry in sorted(kind.iterdir())] if root.is_dir() else []
    return sorted(((entry, _size(entry)) for entry in entries), key=lambda item: -item[1])


def clear_cache() -> int:
    """Remove every cached model; returns the bytes freed."""
    freed = 0
    for entry, size in cache_entries():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        freed += size
    return freed
