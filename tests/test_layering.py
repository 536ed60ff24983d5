"""The package's layers import downwards only, every import sits at module level, and no module cycles exist.

The order is the LAYERS table below and nowhere else (docs/design.md points here).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "prunekit"
LAYERS = {
    "version": 0,
    "errors": 0,
    "jsonfiles": 1,
    "options": 1,
    "provenance": 1,
    "fingerprints": 1,
    "data": 2,
    "models": 2,
    "engine": 3,
    "export": 3,
    "evaluation": 4,
    "recovery": 4,
    "plots": 4,
    "scoring": 5,
    "methods": 6,
    "reporting": 7,
    "api": 7,
    "comparison": 8,
    "jobs": 9,
    "fitting": 9,
    "commands": 10,
    "cli": 11,
    "launcher": 12,
    "": 13,  # the package's __init__ re-exports the public API
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(p for p in parts if p != "__init__")] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported prunekit module, imported at module level) for every import in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prunekit":
            base = node.module.removeprefix("prunekit").lstrip(".")
            names = [f"{base}.{a.name}".lstrip(".") for a in node.names]
            found += [(n if n in modules else base, id(node) in top) for n in names]
        elif isinstance(node, ast.Import):
            found += [
                (a.name.removeprefix("prunekit").lstrip("."), id(node) in top) for a in node.names if a.name.split(".")[0] == "prunekit"
            ]
    return found


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_module_has_a_layer():
    assert not [m for m in _modules() if m.split(".")[0] not in LAYERS]


def test_imports_go_down_the_layers_and_sit_at_module_level():
    modules = _modules()
    upward, hidden = [], []
    for name, path in modules.items():
        for target, at_top in _imports(path, modules):
            if target and target.split(".")[0] != name.split(".")[0] and _layer(target) >= _layer(name):
                upward.append(f"{name} -> {target}")
            if not at_top:
                hidden.append(f"{name} -> {target}")
    assert not upward, f"imports against the layering: {upward}"
    assert not hidden, f"imports inside functions (move them to the top; a cycle means a module is misplaced): {hidden}"


def test_no_module_imports_itself_through_others():
    modules = _modules()
    graph = {name: {t for t, _ in _imports(path, modules) if t in modules and t and t != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [node])):
                return cycle
        state[node] = 2
        return None

    for name in graph:
        if name and name not in state:
            assert visit(name, []) is None
