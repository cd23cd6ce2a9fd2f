"""The plugin example in docs/plugins.md works as documented."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import torch
from torch import nn

import modprune

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _example_module() -> types.ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "docs/plugins.md lost its python example"
    module = types.ModuleType("my_modprune_plugin")
    exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


def test_documented_plugin_registers_and_prunes(tmp_path, monkeypatch):
    plugin = _example_module()
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)  # importable, as an installed one is
    pm = modprune.get_plugin_manager(plugins=[plugin])
    assert "cubic" in modprune.list_importances(pm)
    assert "channel_gate" in modprune.valid_categories(pm)

    model = nn.Sequential(nn.Conv2d(3, 8, 3), plugin.SqueezeExcite(8), nn.Conv2d(8, 4, 3))
    cats = modprune.categorize(model, pm)
    assert cats.params["1.fc.weight"] == "channel_gate"
    before = model[1].fc.weight.detach().clone()
    cfg = modprune.PruneConfig(target=0.3, importance="cubic", protect=("channel_gate",))
    report = modprune.prune(model, cfg, example_inputs=torch.randn(1, 3, 16, 16), pm=pm)
    assert abs(report.achieved - 0.3) < 1e-3
    assert torch.equal(model[1].fc.weight, before)

    path = modprune.save(model, tmp_path / "m.pt", pm=pm)
    loaded = modprune.load(path, pm=pm)  # the block is allowlisted: no trust_pickle needed
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))
