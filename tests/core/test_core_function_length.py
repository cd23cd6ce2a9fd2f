"""House rule: no function longer than 60 lines (from ``def`` to the end of its body), in modprune and in
every plugin shipped in ``plugins/*/src``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
MAX_LINES = 60
#: Known offenders, each with the reason it is allowed (none today). An entry that no longer offends
#: fails the test, so the list cannot go stale.
ALLOWED: set[str] = set()


def source_files() -> list[Path]:
    roots = [ROOT / "src" / "modprune", *sorted((ROOT / "plugins").glob("*/src"))]
    return sorted(p for root in roots for p in root.rglob("*.py"))


def function_lengths(path: Path) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function and method in ``path``, decorators not counted."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((name, child.end_lineno - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), "")
    return found


def test_the_scan_sees_modprune_and_the_plugins() -> None:
    files = {str(p.relative_to(ROOT)) for p in source_files()}
    assert "src/modprune/api.py" in files
    assert any(f.startswith("plugins/") for f in files)
    lengths = dict(function_lengths(ROOT / "src" / "modprune" / "registry.py"))
    assert lengths["Registry.register"] > 5 and "Registry.get" in lengths


def test_no_function_is_longer_than_60_lines() -> None:
    offenders, lengths = [], {}
    for path in source_files():
        for name, lines in function_lengths(path):
            key = f"{path.relative_to(ROOT)}::{name}"
            lengths[key] = lines
            if lines > MAX_LINES and key not in ALLOWED:
                offenders.append(f"{key} has {lines} lines")
    assert not offenders, f"functions over {MAX_LINES} lines (split them into named helpers):\n" + "\n".join(offenders)
    stale = sorted(k for k in ALLOWED if lengths.get(k, 0) <= MAX_LINES)
    assert not stale, f"no longer over {MAX_LINES} lines (or gone): remove from ALLOWED: {stale}"
