"""The TokenC3-LSNet plugin imports only modprune's documented public API.

The public modules are the ones docs/api.md shows imports from (``import modprune`` and every
``from modprune... import ...`` line of its code blocks); a name is public when its module lists it
in ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLUGIN_SRC = ROOT / "plugins" / "tokenc3-lsnet" / "src"
API_DOC = ROOT / "docs" / "api.md"


def _documented_imports() -> dict[str, set[str]]:
    """``module -> names`` of every ``from modprune... import`` line in docs/api.md's code blocks."""
    found: dict[str, set[str]] = {"modprune": set()}
    for block in re.findall(r"```python\n(.*?)```", API_DOC.read_text(encoding="utf-8"), flags=re.S):
        for module, names in re.findall(r"^from (modprune[\w.]*) import ([^#\n]+)", block, flags=re.M):
            found.setdefault(module, set()).update(n.strip() for n in names.split(",") if n.strip())
    return found


def _plugin_imports() -> list[tuple[str, str, str]]:
    """``(where, module, name)`` of every modprune import in the plugin's source (name "" for ``import x``)."""
    found = []
    for path in sorted(PLUGIN_SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            where = f"{path.relative_to(PLUGIN_SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "modprune":
                    found.extend((where, node.module, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                found.extend((where, a.name, "") for a in node.names if a.name.split(".")[0] == "modprune")
    return found


def test_the_plugin_imports_something_from_modprune() -> None:
    modules = {module for _, module, _ in _plugin_imports()}
    assert {"modprune", "modprune.surgery", "modprune.integrations.ultralytics"} <= modules


def test_documented_public_names_exist() -> None:
    for module_name, names in _documented_imports().items():
        module = importlib.import_module(module_name)
        exported = set(getattr(module, "__all__", ()))
        assert exported, f"{module_name} is documented as public but has no __all__"
        assert names <= exported, f"docs/api.md imports {sorted(names - exported)} from {module_name}, not in __all__"


@pytest.mark.parametrize("where,module_name,name", _plugin_imports())
def test_plugin_import_is_public(where: str, module_name: str, name: str) -> None:
    public = _documented_imports()
    assert module_name in public, f"{where}: {module_name} is not a documented public module ({sorted(public)})"
    if name:
        exported = getattr(importlib.import_module(module_name), "__all__", ())
        assert name in exported, f"{where}: {module_name}.{name} is not in {module_name}.__all__"


def test_an_internal_import_would_be_caught(tmp_path, monkeypatch) -> None:
    """The check itself: a plugin file importing a private module fails it."""
    bad = tmp_path / "pkg" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("from modprune.integrations.ultralytics.offline import ensure_offline\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PLUGIN_SRC", tmp_path)
    [(where, module_name, name)] = _plugin_imports()
    with pytest.raises(AssertionError, match="not a documented public module"):
        test_plugin_import_is_public(where, module_name, name)
