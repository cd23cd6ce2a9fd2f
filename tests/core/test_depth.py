"""The depth pruner on toy models: ranking, targets, protections, steps, the hook's contract."""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import pytest
import torch
from torch import nn

import modprune
from modprune import RemovableBlock, hookimpl
from modprune.exceptions import ConfigError, UnreachableTargetError
from modprune.measure import count_macs, count_params
from modprune.plugins import get_plugin_manager
from modprune.pruners.depth import DepthOptions, choose_blocks
from modprune.pruners.depth_blocks import BlockEffect, removable_blocks


class Res(nn.Module):
    """``x + conv(x)``; ``scale`` sets how much the branch matters."""

    def __init__(self, c: int, scale: float, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2)
        with torch.no_grad():
            self.conv.weight.mul_(scale)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class Toy(nn.Module):
    """stem -> three residual blocks of equal MACs (the middle one nearly harmless) -> head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Res(8, 1.0), Res(8, 1e-3), Res(8, 0.5))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class ToyBlocks:
    """Offers every ``Res`` as a residual block."""

    @hookimpl
    def modprune_removable_blocks(self, model: nn.Module) -> list[Any]:
        return [RemovableBlock(m, n) for n, m in model.named_modules() if isinstance(m, Res)]


@pytest.fixture()
def pm() -> modprune.ModpruneManager:
    return get_plugin_manager(entry_points=False, plugins=[ToyBlocks()])


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _depth(target: float, kind: str = "blocks", **kwargs: Any) -> modprune.PruneConfig:
    return modprune.PruneConfig(method="depth", target=target, target_kind=kind, **kwargs)


def _removed(model: Toy) -> list[int]:
    return [i for i, m in enumerate(model.blocks) if isinstance(m, nn.Identity)]


def test_ranking_removes_the_least_harmful_block(pm: modprune.ModpruneManager) -> None:
    model = Toy()
    before = model(X)
    report = modprune.prune(model, _depth(0.3), example_inputs=X, pm=pm)
    assert _removed(model) == [1]
    after = model(X)
    assert after.shape == before.shape and torch.allclose(after, before, atol=1e-2)
    assert report.achieved == pytest.approx(1 / 3)
    assert any("removed blocks.1" in n for n in report.notes)


def test_macs_target_is_met_and_counted_exactly(pm: modprune.ModpruneManager) -> None:
    model = Toy()
    macs = count_macs(model, X)
    block = count_macs(model.blocks[0], torch.zeros(2, 8, 16, 16))
    report = modprune.prune(model, _depth(0.5, "macs"), example_inputs=X, pm=pm)
    assert report.macs_before == macs and report.macs_after == count_macs(model, X)
    assert 0.5 <= report.achieved < 0.5 + block / macs  # met, overshooting by less than one block
    assert _removed(model) == [1, 2]  # the two least harmful of three equal-MACs blocks (scales 1e-3 and 0.5)
    assert report.achieved == pytest.approx(1 - report.macs_after / report.macs_before)


def test_harm_per_mac_prefers_a_cheap_harmless_block() -> None:
    def effect(name: str, change: float, macs: int) -> BlockEffect:
        return BlockEffect(RemovableBlock(nn.Identity(), name), change, macs, 1)

    effects = [effect("a", 0.2, 100), effect("b", 0.1, 10), effect("c", 0.05, 100), effect("d", math.inf, 1000)]
    chosen, done = choose_blocks(effects, "macs", 150)
    # per MAC: c 5e-4, a 2e-3, b 1e-2; after c only a completes the target alone
    assert [e.block.name for e in chosen] == ["c", "a"] and done == 200
    chosen, done = choose_blocks(effects, "macs", 105)  # c, then the least harmful completer: b (0.1) over a (0.2)
    assert [e.block.name for e in chosen] == ["c", "b"] and done == 110
    assert choose_blocks(effects, "macs", math.inf)[1] == 210  # d (breaks the forward) is never chosen
    assert [e.block.name for e in choose_blocks(effects, "macs", 500, max_blocks=1)[0]] == ["c"]


def test_nested_blocks_count_once() -> None:
    outer = BlockEffect(RemovableBlock(nn.Identity(), "x"), 0.5, 100, 10)
    inner = BlockEffect(RemovableBlock(nn.Identity(), "x.y"), 0.01, 30, 3)
    chosen, done = choose_blocks([outer, inner], "macs", 100)
    assert [e.block.name for e in chosen] == ["x"] and done == 100  # the outer one replaces the inner
    chosen, done = choose_blocks([outer, inner], "blocks", 1)
    assert [e.block.name for e in chosen] == ["x.y"] and done == 1


def test_protect_modules_and_categories_keep_blocks(pm: modprune.ModpruneManager) -> None:
    model = Toy()
    report = modprune.prune(model, _depth(0.3, protect_modules=("blocks.1",)), example_inputs=X, pm=pm)
    assert 1 not in _removed(model) and len(_removed(model)) == 1
    assert any("protect_modules" in n for n in report.notes)
    model = Toy()
    state = copy.deepcopy(model.state_dict())
    category = modprune.categorize(model, pm).params["blocks.0.conv.weight"]
    with pytest.raises(UnreachableTargetError, match="protected category"):
        modprune.prune(model, _depth(0.3, protect=(category,)), example_inputs=X, pm=pm)
    assert _removed(model) == [] and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="match no module"):
        modprune.prune(Toy(), _depth(0.3, protect_modules=("nope",)), example_inputs=X, pm=pm)


def test_unreachable_targets_and_bad_options(pm: modprune.ModpruneManager) -> None:
    with pytest.raises(UnreachableTargetError, match="unreachable by depth pruning"):
        modprune.prune(Toy(), _depth(0.9, "macs"), example_inputs=X, pm=pm)
    with pytest.raises(UnreachableTargetError):
        modprune.prune(Toy(), _depth(0.9, pruner_options={"max_blocks": 1}), example_inputs=X, pm=pm)
    with pytest.raises(ConfigError, match="example_inputs"):
        modprune.prune(Toy(), _depth(0.3), pm=pm)
    for bad in ({"max_blocks": 0}, {"kinds": []}, {"kinds": 3}, {"nope": 1}):
        with pytest.raises(ConfigError):
            modprune.prune(Toy(), _depth(0.3, pruner_options=bad), example_inputs=X, pm=pm)
    assert DepthOptions(kinds=["residual"]).kinds == ("residual",)
    with pytest.raises(ConfigError, match="removal"):
        RemovableBlock(nn.Identity(), "a", removal="delete")


def test_params_target_and_steps_call_on_step(pm: modprune.ModpruneManager) -> None:
    model = Toy()
    seen: list[tuple[int, int]] = []
    start = count_params(model)
    report = modprune.prune(model, _depth(0.5, "params", steps=2), example_inputs=X, pm=pm,
                            on_step=lambda step, steps, m: seen.append((step, steps)))
    assert seen == [(1, 2), (2, 2)]
    assert report.achieved == pytest.approx(1 - count_params(model) / start) and report.achieved >= 0.5
    assert sum(1 for n in report.notes if "step 1/2: removed" in n) >= 1
    assert sum(1 for n in report.notes if "step 2/2: removed" in n) >= 1


def test_junk_offers_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = Toy()
    good = RemovableBlock(model.blocks[0], "blocks.0")
    with caplog.at_level(logging.WARNING):
        found = removable_blocks(model, ["junk", RemovableBlock(model.blocks[1], "blocks.2"), good, good])
    assert found == [good]
    assert "junk" in caplog.text and "blocks.2" in caplog.text


def test_a_block_whose_removal_breaks_the_forward_is_never_removed() -> None:
    class Widen(nn.Module):  # not residual: 8 -> 4 channels; removing it breaks the head
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    class Liar:
        @hookimpl
        def modprune_removable_blocks(self, model: nn.Module) -> list[Any]:
            return [RemovableBlock(m, n) for n, m in model.named_modules() if isinstance(m, (Widen, Res))]

    model = Toy()
    model.head = nn.Sequential(Widen(), nn.Conv2d(4, 4, 1))
    pm = get_plugin_manager(entry_points=False, plugins=[Liar()])
    modprune.prune(model, _depth(0.2), example_inputs=X, pm=pm)
    assert isinstance(model.head[0], Widen) and _removed(model) == [1]


def test_depth_structured_splits_one_target(pm: modprune.ModpruneManager) -> None:
    model = Toy()
    config = modprune.PruneConfig(method="depth+structured", target=0.5, importance="l2",
                                  pruner_options={"depth_share": 0.5})
    report = modprune.prune(model, config, example_inputs=X, pm=pm)
    assert _removed(model) == [1]
    assert report.target_kind == "macs" and report.achieved >= 0.49  # 8-channel layers: coarse channel steps
    assert any(n.startswith("depth: ") for n in report.notes) and any(n.startswith("structured: ") for n in report.notes)
    assert model(X).shape == (2, 4, 16, 16)
    with pytest.raises(ConfigError, match="depth_share"):
        modprune.prune(Toy(), modprune.PruneConfig(method="depth+structured", pruner_options={"depth_share": 2}),
                       example_inputs=X, pm=pm)
