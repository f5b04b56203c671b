"""The package's layers, read from the code: imports point down only (README, "Layers").

Every `import` in every module counts, including those inside functions (runtimes are imported
lazily there, and a lazy import that points up is still a cycle in the design).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "toolkit"

# layer -> the layers it may import (besides itself). Top of the stack first.
ALLOWED = {
    "cli": {"api", "core"},
    "api": {"pipeline", "intake", "output", "passes", "backends", "core", "metrics"},
    "pipeline": {"intake", "output", "passes", "backends", "core", "metrics"},
    "intake": {"backends", "core", "metrics"},
    "output": {"core", "metrics"},
    "passes": {"backends", "core", "metrics"},
    "backends": {"core", "metrics"},
    "metrics": set(),
    "core": set(),
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "toolkit":
        return None
    if len(parts) == 1:
        return "root"
    return parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "toolkit":  # `from toolkit import api` names a subpackage
                found += [(node.lineno, f"toolkit.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


MODULES = sorted(PKG.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    top = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "api.py"))
    assert top == [], f"modules outside the layered packages: {top}"
    assert set(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == set(ALLOWED) - {"api"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path):
    me = _layer(_module_name(path))
    if me == "root":
        me = "api"  # toolkit/__init__.py is the public face of the API
    bad = []
    for line, target in _imports(path):
        other = _layer(target)
        if other is None or other == me:
            continue
        if other not in ALLOWED[me]:
            bad.append(f"line {line}: {me} imports {target}")
    assert not bad, "; ".join(bad)


def test_no_private_names_imported_across_modules():
    bad = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("toolkit"):
                bad += [f"{path.relative_to(PKG)}:{node.lineno} {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, f"private names imported from other modules: {bad}"


def test_no_module_is_a_wall():
    long = {str(p.relative_to(PKG)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 420}
    assert not long, f"modules over ~400 lines (split by concept): {long}"
