"""Contracts every registered strategy must keep, parametrised over the default plugin manager
(built-ins, the ultralytics integration when installed, and installed third-party plugins)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import pytest
import torch
from torch import nn

import modprune
from modprune.config import PruneConfig
from modprune.detectors import Detector
from modprune.exceptions import ConfigError
from modprune.importance import CHANNELS, WEIGHTS, Importance, ScoreContext
from modprune.pruners import Pruner
from modprune.recipes import FINETUNE_KEYS, Recipe, recipe_from_dict

PM = modprune.get_plugin_manager()
STRATEGIES = PM.strategies
#: Pruners that recipes may name before they are registered (being written in parallel).
PENDING_PRUNERS = {"structured"}


class _Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def arbitrary_modules() -> list[nn.Module]:
    """Modules of many kinds, including ones no built-in detector knows."""
    return [
        nn.Conv2d(3, 8, 3),
        nn.Conv2d(8, 8, 3, groups=8),
        nn.Conv2d(8, 8, 3, groups=2),
        nn.Conv1d(4, 4, 1),
        nn.ConvTranspose2d(4, 4, 2, groups=4),
        nn.Linear(4, 2),
        nn.BatchNorm2d(4),
        nn.LayerNorm(4),
        nn.GroupNorm(2, 4),
        nn.MultiheadAttention(8, 2),
        nn.LSTM(4, 4),
        nn.Embedding(10, 4),
        nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()),
        nn.ModuleList([nn.Identity()]),
        nn.ModuleDict({"a": nn.Identity()}),
        nn.Identity(),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        _Custom(),
    ]


@pytest.mark.parametrize("name", STRATEGIES.detectors.list())
def test_detector_contract(name: str) -> None:
    det = STRATEGIES.detectors.get(name)
    assert isinstance(det, Detector) and det.name == name
    assert isinstance(det.category, str) and det.category
    assert isinstance(det.priority, int) and not isinstance(det.priority, bool)
    for module in arbitrary_modules():
        for qualified in ("", "model.0", "attention"):
            assert type(det.matches(module, qualified)) is bool


@pytest.mark.parametrize("name", STRATEGIES.importances.list())
def test_importance_contract(name: str) -> None:
    imp = STRATEGIES.importances.get(name)
    assert isinstance(imp, Importance) and imp.name == name
    assert imp.scores and imp.scores <= {WEIGHTS, CHANNELS}
    assert type(imp.configure({})) is type(imp)
    with pytest.raises(ConfigError, match="unknown options"):
        imp.configure({"no_such_option": 1})
    if CHANNELS in imp.scores:
        assert imp.channel_importance() is not None


WEIGHT_IMPORTANCES = [n for n in STRATEGIES.importances.list() if WEIGHTS in STRATEGIES.importances.get(n).scores]


@pytest.mark.parametrize("name", WEIGHT_IMPORTANCES)
@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (10, 32), (4, 1, 3, 3), (2, 2, 1, 1, 1)])
def test_weight_scores_are_non_negative_and_same_shape(name: str, shape: tuple[int, ...]) -> None:
    imp = STRATEGIES.importances.get(name)
    gen = torch.Generator().manual_seed(0)
    param = nn.Parameter(torch.randn(shape, generator=gen))
    param.grad = torch.randn(shape, generator=gen)  # gradient-based metrics read .grad
    ctx = ScoreContext(model=nn.Identity(), generator=torch.Generator().manual_seed(0))
    scores = imp.weight_scores(param, ctx)
    assert isinstance(scores, torch.Tensor) and scores.shape == param.shape
    assert torch.isfinite(scores).all() and (scores >= 0).all()
    assert not scores.requires_grad or scores.grad_fn is None


@pytest.mark.parametrize("name", WEIGHT_IMPORTANCES)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_weight_importance_prunes_end_to_end(name: str, scope: str, cnn: nn.Module, image: torch.Tensor) -> None:
    cnn.eval()
    before = cnn(image)
    report = modprune.prune(cnn, PruneConfig(importance=name, target=0.3, scope=scope), example_inputs=image)
    assert abs(report.achieved - 0.3) < 1e-3
    assert report.to_dict()["nonzero_after"] == report.nonzero_after < report.nonzero_before
    after = cnn(image)
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert all(p.grad is None for p in cnn.parameters())  # no gradients left behind


@pytest.mark.parametrize("name", STRATEGIES.pruners.list())
def test_pruner_contract(name: str) -> None:
    pruner = STRATEGIES.pruners.get(name)
    assert isinstance(pruner, Pruner) and pruner.name == name
    assert pruner.requires in (WEIGHTS, CHANNELS)
    assert isinstance(pruner.description, str)
    assert callable(pruner.plan) and callable(pruner.apply)
    assert pruner.target_kinds and all(isinstance(k, str) and k for k in pruner.target_kinds)
    assert dataclasses.is_dataclass(pruner.options_type)
    assert pruner.parse_options({}) == pruner.options_type()  # every option has a default
    with pytest.raises(ConfigError, match="unknown pruner_options no_such_option"):
        pruner.parse_options({"no_such_option": 1})
    assert [n for n in STRATEGIES.importances.list() if pruner.requires in STRATEGIES.importances.get(n).scores]


# --- layer pruners: an example module (and its input, given its input channels) per registered type ---


def _layer_examples() -> dict[str, tuple[Callable[[], nn.Module], Callable[[int | None], torch.Tensor]]]:
    """Example instances of module types that plugins register layer pruners for (by qualified name).

    A plugin that registers a layer pruner for a new type adds its example here."""
    from modprune_tokenc3_lsnet.prunable_layers import BranchAttention, BranchPick, HeadLinear

    def attention() -> nn.Module:
        return BranchAttention(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Sigmoid())

    return {
        _qualname(BranchAttention): (attention, lambda c: torch.randn(1, c or 8, 4, 4)),
        _qualname(BranchPick): (lambda: BranchPick(1), lambda c: torch.rand(1, 2, 1, 1)),
        _qualname(HeadLinear): (lambda: HeadLinear(8, 12, heads=2), lambda c: torch.randn(3, c or 8)),
    }


def _qualname(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def _channels_to_drop(pruner: Any, layer: nn.Module, count: int, out: bool) -> list[int]:
    """One channel per channel group (the groups a pruner declares must lose channels together)."""
    groups = getattr(pruner, "get_out_channel_groups" if out else "get_in_channel_groups", lambda _: 1)(layer)
    groups = max(1, int(groups or 1))
    return [g * (count // groups) for g in range(groups)]


@pytest.mark.parametrize("module_type", STRATEGIES.layer_pruners.list(), ids=lambda t: t.__name__)
@pytest.mark.parametrize("side", ["out", "in"])
def test_layer_pruner_contract(module_type: type, side: str) -> None:
    from torch_pruning.pruner.function import BasePruningFunc

    pruner = STRATEGIES.layer_pruners.get(module_type)
    assert isinstance(pruner, BasePruningFunc)
    assert STRATEGIES.layer_pruners.source(module_type) in PM.plugin_info
    examples = _layer_examples()
    assert _qualname(module_type) in examples, f"add an example {module_type.__name__} to _layer_examples()"
    make, inputs = examples[_qualname(module_type)]
    layer = make()
    assert isinstance(layer, module_type)
    outs, ins = pruner.get_out_channels(layer), pruner.get_in_channels(layer)
    assert all(c is None or (isinstance(c, int) and c > 0) for c in (outs, ins)), (outs, ins)
    with torch.no_grad():
        layer(inputs(ins))
    count = outs if side == "out" else ins
    if count is None:  # a dependency stop on this side: pruning it changes nothing
        pruner(layer, [0], to_output=side == "out")
        assert (pruner.get_out_channels(layer), pruner.get_in_channels(layer)) == (outs, ins)
        return
    drop = _channels_to_drop(pruner, layer, count, side == "out")
    pruner(layer, drop, to_output=side == "out")
    after = pruner.get_out_channels(layer) if side == "out" else pruner.get_in_channels(layer)
    assert after == count - len(drop)
    new_ins = pruner.get_in_channels(layer)
    with torch.no_grad():
        out = layer(inputs(new_ins))
    if side == "out" and isinstance(out, torch.Tensor) and out.dim() >= 2:
        assert out.shape[1] == after or out.shape[-1] == after


@pytest.mark.parametrize("name", STRATEGIES.recipes.list())
def test_recipe_contract(name: str) -> None:
    recipe = STRATEGIES.recipes.get(name)
    assert isinstance(recipe, Recipe) and recipe.name == name and isinstance(recipe.description, str)
    config = recipe.config
    assert isinstance(config, PruneConfig)
    assert PruneConfig.from_dict(config.to_dict()) == config
    assert PruneConfig.from_yaml(config.to_yaml()) == config
    again = recipe_from_dict(recipe.to_dict())
    assert (again.name, again.description, again.config, again.finetune) == (recipe.name, recipe.description,
                                                                              config, recipe.finetune)
    assert modprune.load_recipe(name) == config and modprune.find_recipe(name) == recipe
    assert set(recipe.finetune) <= set(FINETUNE_KEYS) and isinstance(hash(recipe), int)  # a set can hold it


@pytest.mark.parametrize("name", STRATEGIES.recipes.list())
def test_recipe_names_registered_strategies(name: str) -> None:
    config = STRATEGIES.recipes.get(name).config
    if config.method in PENDING_PRUNERS and config.method not in STRATEGIES.pruners:
        pytest.xfail(f"pruner {config.method!r} is not registered yet")
    pruner = STRATEGIES.pruners.get(config.method)
    importance = STRATEGIES.importances.get(config.importance).configure(config.importance_options)
    assert pruner.requires in importance.scores
    resolved = modprune.resolve_config(config, PM)  # target kind and pruner_options suit the pruner
    assert resolved.target_kind in pruner.target_kinds


@pytest.mark.parametrize("name", [n for n in STRATEGIES.recipes.list() if STRATEGIES.recipes.get(n).config.method == "unstructured"])
def test_unstructured_recipes_prune_end_to_end(name: str, cnn: nn.Module, image: torch.Tensor) -> None:
    config = modprune.load_recipe(name)
    reference = copy.deepcopy(cnn)
    report = modprune.prune(cnn, config, example_inputs=image)
    assert abs(report.achieved - config.target) < 1e-3
    assert report.macs_before == report.macs_after == modprune.measure.count_macs(reference, image)
