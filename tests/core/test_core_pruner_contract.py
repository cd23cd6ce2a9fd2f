"""The pruner contract as modprune.prune uses it: plan once, apply once, an outcome, a read-only context."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
from typing import Any

import pytest
import torch
from torch import nn

import modprune
import modprune.api
from modprune import hookimpl
from modprune.exceptions import ModpruneError
from modprune.pruners import PruneContext
from modprune.pruners.structured import StructuredPruner
from modprune.pruners.unstructured import UnstructuredPruner
from modprune.registry import LayerPrunerRegistry
from modprune.report import category_table


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of plan / apply / classify / the unstructured walk during one prune."""
    counts = {"plan": 0, "apply": 0, "classify": 0, "walk": 0}

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    for cls in (UnstructuredPruner, StructuredPruner):
        monkeypatch.setattr(cls, "plan", counting("plan", cls.plan))
        monkeypatch.setattr(cls, "apply", counting("apply", cls.apply))
    module = importlib.import_module("modprune.detectors.classify")  # the package re-exports the function
    classify = counting("classify", module.classify)
    monkeypatch.setattr(modprune.api, "classify", classify)
    monkeypatch.setattr(module, "classify", classify)
    import modprune.pruners.unstructured as unstructured

    monkeypatch.setattr(unstructured, "_walk", counting("walk", unstructured._walk))
    return counts


def test_unstructured_plans_once_and_walks_the_model_once(cnn: nn.Module, calls: dict[str, int]) -> None:
    report = modprune.prune(cnn, modprune.PruneConfig(target=0.3))
    assert abs(report.achieved - 0.3) < 1e-3
    assert calls == {"plan": 1, "apply": 1, "classify": 1, "walk": 1}


def test_iterative_unstructured_walks_once_per_later_step(cnn: nn.Module, calls: dict[str, int]) -> None:
    modprune.prune(cnn, modprune.PruneConfig(target=0.3, steps=3))
    assert calls == {"plan": 1, "apply": 1, "classify": 1, "walk": 3}


def test_structured_plans_once_and_classifies_once(cnn: nn.Module, image: torch.Tensor, calls: dict[str, int]) -> None:
    modprune.prune(cnn, modprune.PruneConfig(method="structured", target=0.3, importance="l2"), image)
    assert (calls["plan"], calls["apply"], calls["classify"]) == (1, 1, 1)


def test_a_failing_plan_changes_nothing_and_is_not_applied(cnn: nn.Module, calls: dict[str, int]) -> None:
    before = copy.deepcopy(cnn.state_dict())
    with pytest.raises(modprune.UnreachableTargetError):
        modprune.prune(cnn, modprune.PruneConfig(target=0.9, max_ratio=0.1))
    assert (calls["plan"], calls["apply"]) == (1, 0)
    now = cnn.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in before.items())


class Wrap(nn.Module):
    """What a plugin's prepare step might turn a convolution into (same outputs)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.inner = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Rewriter:
    """Wraps the first convolution before structured pruning and unwraps it afterwards."""

    @hookimpl
    def modprune_register_detectors(self) -> list[modprune.Detector]:
        return [modprune.by_type("wrapped", "wrapped", Wrap, priority=60)]

    @hookimpl
    def modprune_prepare_model(self, model: nn.Module, config: Any) -> None:
        model[0] = Wrap(model[0])

    @hookimpl
    def modprune_finalize_model(self, model: nn.Module) -> None:
        model[0] = model[0].inner


def test_a_rewrite_undone_afterwards_costs_one_classification(
    cnn: nn.Module, image: torch.Tensor, calls: dict[str, int]
) -> None:
    pm = modprune.get_plugin_manager(entry_points=False, plugins=[Rewriter()])
    config = modprune.PruneConfig(method="structured", target=0.3, importance="l2", protect=("wrapped",))
    first = cnn[0].weight.detach().clone()
    report = modprune.prune(cnn, config, image, pm=pm)
    assert calls["classify"] == 2  # before, and after the rewrite; the restored model needs none
    assert torch.equal(cnn[0].weight, first)  # protected while wrapped
    fresh = category_table(cnn, modprune.categorize(cnn, pm))
    assert {r.category: (r.params_after, r.nonzero_after) for r in report.categories if r.params_after} == fresh
    assert any("prepared by plugins" in n for n in report.notes)


def test_the_context_is_read_only_and_left_as_it_was(
    cnn: nn.Module, image: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[PruneContext, Any]] = []
    apply = StructuredPruner.apply

    def spy(self: Any, model: nn.Module, plan: Any, ctx: PruneContext) -> Any:
        seen.append((ctx, copy.deepcopy(ctx.categories)))
        return apply(self, model, plan, ctx)

    monkeypatch.setattr(StructuredPruner, "apply", spy)
    report = modprune.prune(cnn, modprune.PruneConfig(method="structured", target=0.3, importance="l2"), image)
    ctx, categories = seen[0]
    assert ctx.categories == categories
    assert report.notes  # the notes came back in the outcome
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.categories = categories  # type: ignore[misc]
    assert not hasattr(ctx, "pm") and not hasattr(ctx, "notes")


def test_report_shows_the_resolved_target_kind(cnn: nn.Module, image: torch.Tensor) -> None:
    config = modprune.PruneConfig(method="structured", target=0.2, importance="l2")
    assert config.target_kind is None
    report = modprune.prune(cnn, config, image)
    assert report.target_kind == "macs" and report.config["target_kind"] == "macs"
    assert report.to_dict()["target_kind"] == "macs"


def test_apply_must_return_an_outcome(cnn: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(UnstructuredPruner, "apply", lambda self, model, plan, ctx: None)
    with pytest.raises(ModpruneError, match="not a PruneOutcome"):
        modprune.prune(cnn, modprune.PruneConfig(target=0.1))


# --- the layer pruner registry -------------------------------------------------------------------


class BadLayerPruners:
    @hookimpl
    def modprune_register_layer_pruners(self) -> list[tuple[Any, Any]]:
        return [(Wrap, "wrap-pruner"), ("Wrap", object()), (Wrap,)]


def test_layer_pruner_registry_skips_wrong_entries_naming_the_plugin(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modprune.plugins"):
        pm = modprune.get_plugin_manager(entry_points=False, plugins=[BadLayerPruners()])
    assert Wrap not in pm.strategies.layer_pruners and len(pm.strategies.layer_pruners) == 0
    assert "BadLayerPruners" in pm.failed_plugins
    messages = [r.getMessage() for r in caplog.records]
    assert any("BadLayerPruners" in m and "'wrap-pruner'" in m and "BasePruningFunc" in m for m in messages)
    assert any("not a module class" in m for m in messages)
    assert any("not a (module_type, pruner) pair" in m for m in messages)
    with pytest.raises(ModpruneError, match="BadLayerPruners.*BasePruningFunc"):
        modprune.get_plugin_manager(entry_points=False, plugins=[BadLayerPruners()], strict=True)


def test_layer_pruner_registry_verbs() -> None:
    import torch_pruning as tp

    registry = LayerPrunerRegistry()
    conv = tp.pruner.function.ConvPruner()
    registry.register(Wrap, conv, source="plugin-a")
    assert registry.get(Wrap) is conv and registry[Wrap] is conv and registry.source(Wrap) == "plugin-a"
    assert registry.list() == [Wrap] and registry.items() == [(Wrap, conv)] and dict(registry) == {Wrap: conv}
    with pytest.raises(modprune.DuplicateStrategyError, match="plugin-b.*plugin-a"):
        registry.register(Wrap, conv, source="plugin-b")
    with pytest.raises(modprune.UnknownStrategyError, match="Conv2d.*Wrap"):
        registry.get(nn.Conv2d)


def test_registry_items_are_sorted_pairs() -> None:
    strategies = modprune.get_plugin_manager(entry_points=False).strategies
    assert [n for n, _ in strategies.pruners.items()] == strategies.pruners.list()
    assert all(strategies.pruners.get(n) is p for n, p in strategies.pruners.items())
