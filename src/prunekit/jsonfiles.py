"""The JSON files prunekit writes (plans, eval results, run state): read with one-line errors,
written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from prunekit.errors import PrunekitError

MAX_JSON_DEPTH = 64  # prunekit's JSON (records, recipes, plans) is shallow; deeper input is refused before json recurses


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no array or object in `text` nests deeper than `limit` (brackets inside strings do not count)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads_limited(text: str, where: str):
    """json.loads with one-line errors naming `where`, refusing nesting deeper than MAX_JSON_DEPTH."""
    if not json_depth_ok(text):
        raise PrunekitError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels; prunekit's JSON inputs are shallow")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PrunekitError(f"{where} is not valid JSON ({error.msg} at line {error.lineno})") from None


def read_json_object(path: str | Path, kind: str) -> dict:
    """The JSON object in `path`; a missing file, bad JSON or a non-object is a one-line error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrunekitError(f"{kind} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PrunekitError(f"{kind} file {path} is not UTF-8 text (JSON files are)") from error
    data = loads_limited(text, f"{kind} file {path}")
    if not isinstance(data, dict):
        raise PrunekitError(f"{kind} file {path} does not hold a JSON object")
    return data


def write_json_atomically(path: str | Path, payload) -> None:
    """Write `payload` as JSON under a temporary name, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(payload, indent=2) + "\n")
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's file is private; a plain write would not be
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
