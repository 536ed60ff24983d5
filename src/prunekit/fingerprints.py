"""What identifies data and files by their content, not their names: a resumed run or a replayed plan must
find the same bytes again, and a cache entry belongs to one file wherever it lies.

Files are read in samples (their size plus evenly spread slices; all of a small file), so identifying
a large corpus costs a fixed amount per file; token windows are hashed whole.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def sampled_digest(path: str | os.PathLike, samples: int, sample_bytes: int) -> str:
    """The size and the SHA-256 of `samples` evenly spread slices of `sample_bytes` (the whole of a file no larger
    than their sum): two copies of one file share it, a file that grew or was edited (almost surely) does not."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= sample_bytes * samples:
            digest.update(handle.read())
        else:
            for index in range(samples):
                handle.seek((size - sample_bytes) * index // (samples - 1))
                digest.update(handle.read(sample_bytes))
    return digest.hexdigest()[:16]


def data_file_digest(path: str | os.PathLike) -> str:
    """A data shard's identity: its size and 8 slices of 64 KiB (512 KiB read at most, so a folder of
    thousands of shards is identified in seconds)."""
    return sampled_digest(path, 8, 1 << 16)


def token_digest(input_ids: torch.Tensor) -> str:
    """The SHA-256 of token windows (their shape and every id): equal exactly when the windows are."""
    ids = input_ids.detach().to("cpu", torch.int64).contiguous()
    digest = hashlib.sha256(str(tuple(ids.shape)).encode())
    digest.update(ids.numpy().tobytes())
    return digest.hexdigest()[:16]
