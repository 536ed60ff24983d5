"""Where a result came from: the plan file every output carries and the library versions behind it."""

from __future__ import annotations

import platform

import torch
import transformers

from prunekit.version import __version__

PLAN_FILE = "prunekit_plan.json"


def library_versions() -> dict:
    return {
        "prunekit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
