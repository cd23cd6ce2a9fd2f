"""Every registered importance that scores channels works with structured pruning (plugins' too)."""

from __future__ import annotations

import pytest
import torch

import modprune
from modprune.importance import CHANNELS

from ._support import example, main_output

_PM = modprune.get_plugin_manager()
CHANNEL_IMPORTANCES = [n for n in _PM.strategies.importances.list() if CHANNELS in _PM.strategies.importances.get(n).scores]


def test_the_builtin_channel_importances_are_covered() -> None:
    assert {"l1", "l2", "l1l2", "random", "taylor", "bn_scale"} <= set(CHANNEL_IMPORTANCES)


@pytest.mark.parametrize("importance", CHANNEL_IMPORTANCES)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_channel_importance_contract(importance: str, scope: str, build, pm) -> None:
    model = build("resnet18")
    before = {n: p.shape for n, p in model.named_parameters()}
    config = modprune.PruneConfig(method="structured", target=0.3, importance=importance, scope=scope)
    report = modprune.prune(model, config, example(), pm=pm)
    assert abs(report.achieved - 0.3) <= 0.01, report.notes
    assert {n: p.shape for n, p in model.named_parameters()} != before
    out = main_output(model, example(96, batch=2))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    assert all(p.grad is None for p in model.parameters())
