"""Reading the JSON files prunekit writes (plans, eval results) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from prunekit.errors import PrunekitError


def read_json_object(path: str | Path, kind: str) -> dict:
    """The JSON object in `path`; a missing file, bad JSON or a non-object is a one-line error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrunekitError(f"{kind} file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PrunekitError(f"{kind} file {path} is not valid JSON ({error.msg})") from error
    if not isinstance(data, dict):
        raise PrunekitError(f"{kind} file {path} does not hold a JSON object")
    return data
