"""Sensitivity analysis: one curve per category (or layer) over the ratio grid, on copies, JSON and plot."""

from __future__ import annotations

import json

import pytest
import torch

import modprune
from modprune.workflows.sensitivity import LAYER_CATEGORY, prunable_units, sensitivity

from _toy_proxy import X, Fidelity, toy_cnn

GRID = [0.25, 0.5]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions: one thread avoids oversubscription on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shapes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters()]


def test_one_curve_per_category_with_the_grid() -> None:
    model = toy_cnn()
    before = _shapes(model)
    score = Fidelity(model)
    result = sensitivity(model, score, X, ratios=GRID)
    assert _shapes(model) == before  # only copies were pruned
    units = prunable_units(model)
    assert [c.unit for c in result.curves] == units and {"conv", "depthwise_conv"} <= set(units)
    data = json.loads(result.to_json())
    assert data["ratios"] == GRID and data["by"] == "category"
    curves = {c["unit"]: c for c in data["curves"]}
    assert curves["linear"]["points"] == [] and "removes nothing" in curves["linear"]["note"]  # feeds the output
    for unit in ("conv", "depthwise_conv"):
        assert [p["ratio"] for p in curves[unit]["points"]] == GRID and not curves[unit]["note"]
        assert all("fidelity" in p and "macs_reduction" in p for p in curves[unit]["points"])
    assert score.calls == 1 + 2 * len(GRID)
    conv = {p["ratio"]: p for p in data["curves"][units.index("conv")]["points"]}
    assert 0 < conv[0.25]["macs_reduction"] < conv[0.5]["macs_reduction"]
    assert conv[0.5]["mse_loss"] > 0 == data["baseline"]["mse_loss"]


def test_by_layer_prunes_one_layer_and_leaves_the_plugin_manager_as_it_was() -> None:
    model = toy_cnn()
    pm = modprune.get_plugin_manager(entry_points=False)
    detectors = pm.strategies.detectors.list()
    result = sensitivity(model, Fidelity(model), X, by="layer", ratios=[0.5], units=["4", "6"], pm=pm)
    assert [c.unit for c in result.curves] == ["4", "6"]
    assert pm.strategies.detectors.list() == detectors and LAYER_CATEGORY not in modprune.valid_categories(pm)
    layer4 = result.curves[0].points[0]
    category = sensitivity(model, Fidelity(model), X, ratios=[0.5], units=["conv"], pm=pm).curves[0].points[0]
    assert 0 < layer4["macs_reduction"] < category["macs_reduction"]  # one conv layer, not all of them


def test_bad_arguments_are_config_errors() -> None:
    model = toy_cnn()
    for kwargs in ({"ratios": [0.0]}, {"ratios": [1.0]}, {"ratios": []}, {"by": "block"}, {"units": ["nope"]}):
        with pytest.raises(modprune.ConfigError):
            sensitivity(model, Fidelity(model), X, **kwargs)


def test_plot_draws_one_line_per_unit(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    model = toy_cnn(width=8)
    result = sensitivity(model, Fidelity(model), X, ratios=[0.5], units=["conv"])
    result.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(modprune.ConfigError, match="mAP50"):
        result.plot(tmp_path / "t.png", metrics=["mAP50"])
