"""The command and demo example in docs/plugins.md ("Commands and demos") works as documented."""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

import pytest

import modprune
import modprune.plugins
from modprune.cli import Command
from modprune.workflows import DemoSpec
from modprune.workflows.demo import select_demo

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _example_module() -> types.ModuleType:
    section = DOC.read_text(encoding="utf-8").split("## Commands and demos", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert block, "docs/plugins.md lost its commands and demos example"
    module = types.ModuleType("my_command_plugin")
    exec(compile(block.group(1), str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


def test_documented_command_and_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    plugin = _example_module()
    pm = modprune.get_plugin_manager(entry_points=False, plugins=[plugin])
    assert [c.name for _, c in pm.collect("modprune_register_commands", Command)] == ["count-params"]
    assert select_demo(pm=pm) == DemoSpec(name="my-model", model="my_model.yaml", unstructured_recipe="unstructured-10",
                                          structured_recipe="structured-30", title="modprune demo: my model")
    monkeypatch.setattr(modprune.plugins, "_default", [pm])
    from torch import nn

    modprune.save(nn.Sequential(nn.Linear(4, 3)), tmp_path / "m.pt")
    assert importlib.import_module("modprune.cli.main").main(["count-params", str(tmp_path / "m.pt")]) == 0
    assert capsys.readouterr().out == "15\n"
