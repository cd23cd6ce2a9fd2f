"""The plugin example in docs/plugins.md works as documented."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import modprune

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _example_module(monkeypatch, index: int = 0, name: str = "my_modprune_plugin") -> types.ModuleType:
    """Run the ``index``-th python block of the doc as module ``name`` (importable, as an installed one is)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) > index, "docs/plugins.md lost its python example"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while exec runs
    exec(compile(blocks[index], str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


def test_documented_plugin_registers_and_prunes(tmp_path, monkeypatch):
    plugin = _example_module(monkeypatch)
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


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.Flatten(), nn.LazyLinear(4))


def test_documented_pruner_declares_its_own_target_kind(monkeypatch):
    plugin = _example_module(monkeypatch, 1, "my_layer_dropper")
    pm = modprune.get_plugin_manager(plugins=[plugin])
    assert "layer_drop" in modprune.list_pruners(pm)
    x = torch.randn(1, 3, 12, 12)
    model = _net()
    model(x)  # materialise the lazy layer
    cfg = modprune.PruneConfig(method="layer_drop", target=0.5, pruner_options={"keep_first": False})
    report = modprune.prune(model, cfg, example_inputs=x, pm=pm)
    assert report.target_kind == "layers" and report.achieved == 0.5
    assert report.config["target_kind"] == "layers"
    zeroed = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.any()]
    assert len(zeroed) == 2 and report.notes == ["zeroed 2 of 4 layers"]
    with pytest.raises(modprune.ConfigError, match=r"target_kind 'macs' is not valid for method 'layer_drop'; valid: layers"):
        modprune.prune(_net(), dataclasses.replace(cfg, target_kind="macs"), example_inputs=x, pm=pm)
    with pytest.raises(modprune.ConfigError, match=r"unknown pruner_options keep_frist; valid: keep_first"):
        modprune.prune(_net(), dataclasses.replace(cfg, pruner_options={"keep_frist": True}), example_inputs=x, pm=pm)
    with pytest.raises(modprune.ConfigError, match="keep_first must be true or false"):
        modprune.prune(_net(), dataclasses.replace(cfg, pruner_options={"keep_first": "no"}), example_inputs=x, pm=pm)
