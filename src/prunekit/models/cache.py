"""Where prunekit keeps converted models (GGUF -> safetensors, unpacked encoders): PRUNEKIT_CACHE or ~/.cache/prunekit."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("PRUNEKIT_CACHE", Path.home() / ".cache" / "prunekit"))
