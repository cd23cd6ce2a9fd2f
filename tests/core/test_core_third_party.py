"""The tiny third-party plugin in tests/third_party_plugin, installed through its entry point."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from torch import nn

import modprune
from modprune.plugins import get_plugin_manager

plugin = pytest.importorskip("modprune_test_plugin")


def se_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), plugin.SqueezeExcite(16), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.LazyLinear(4)
    )


def test_the_entry_point_is_installed() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="modprune")}
    assert eps["test_plugin"].value == "modprune_test_plugin"
    assert eps["test_plugin"].dist is not None and eps["test_plugin"].dist.name == "modprune-test-plugin"


def test_the_default_manager_loads_it() -> None:
    pm = modprune.get_plugin_manager()
    assert "test_plugin" in pm.plugin_info and not pm.plugin_info["test_plugin"].builtin
    assert pm.plugin_info["test_plugin"].version == "0.0.1"
    assert pm.plugin_info["test_plugin"].registered == {"importance": ["magnitude_cubed"], "detector": ["squeeze_excite"]}
    assert "magnitude_cubed" in modprune.list_importances()
    assert "squeeze_excite" in modprune.list_detectors() and "squeeze_excite" in modprune.valid_categories()
    assert pm.strategies.importances.source("magnitude_cubed") == "test_plugin"


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_its_importance_prunes_end_to_end_like_l1(scope: str, make_cnn: object, image: torch.Tensor) -> None:
    cubed, l1 = make_cnn(), make_cnn()  # type: ignore[operator]
    report = modprune.prune(cubed, modprune.PruneConfig(importance="magnitude_cubed", target=0.4, scope=scope),
                            example_inputs=image)
    assert abs(report.achieved - 0.4) <= 0.001
    modprune.prune(l1, modprune.PruneConfig(importance="l1", target=0.4, scope=scope))
    for a, b in zip(cubed.parameters(), l1.parameters()):  # |w|^3 ranks exactly like |w|
        assert torch.equal(a == 0, b == 0)


def test_its_detector_and_safe_global(tmp_path: Path) -> None:
    model = se_model()
    x = torch.randn(1, 3, 8, 8)
    model(x)  # materialise the lazy layer
    cats = modprune.categorize(model).params
    assert cats["1.fc1.weight"] == cats["1.fc2.bias"] == "squeeze_excite" and cats["0.weight"] == "conv"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = modprune.prune(model, modprune.PruneConfig(target=0.3, protect=("squeeze_excite",)), example_inputs=x)
    assert abs(report.achieved - 0.3) <= 0.001
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("1."))
    modprune.save(model, tmp_path / "se.pt")
    loaded = modprune.load(tmp_path / "se.pt")  # SqueezeExcite is allowlisted by the plugin: no trust_pickle
    assert isinstance(loaded[1], plugin.SqueezeExcite)
    assert torch.equal(loaded(x), model.eval()(x))


def test_passed_explicitly_without_entry_points(cnn: nn.Module) -> None:
    pm = get_plugin_manager(entry_points=False, plugins=[plugin])
    assert "test_plugin" not in pm.plugin_info and "modprune_test_plugin" in pm.plugin_info
    assert "magnitude_cubed" in modprune.list_importances(pm)
    report = modprune.prune(cnn, modprune.PruneConfig(importance="magnitude_cubed", target=0.2), pm=pm)
    assert abs(report.achieved - 0.2) <= 0.001
    assert "magnitude_cubed" not in modprune.list_importances(get_plugin_manager(entry_points=False))


def test_passed_explicitly_and_installed_is_registered_once() -> None:
    pm = get_plugin_manager(plugins=[plugin])
    assert pm.strategies.importances.source("magnitude_cubed") == "test_plugin"
    assert not pm.failed_plugins.get("modprune_test_plugin")
