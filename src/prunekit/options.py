"""Config fields that carry their own help, so every front end (CLI flags, docs) reads one source."""

from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any = None, help: str = "", *, factory=None, flag: str | None = None, **metadata) -> Any:
    """A dataclass field with `help` (and optionally the CLI `flag` that differs from --field-name)."""
    meta = {"help": help, **({"flag": flag} if flag else {}), **metadata}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
