"""Property tests over randomly generated small CNNs (convs, depthwise, residual adds, concat, linear head)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import modprune
from modprune import PruneConfig, UnreachableTargetError
from modprune.measure.walk import effective_parameters

INPUT = (2, 3, 8, 8)


class Residual(nn.Module):
    def __init__(self, channels: int, depthwise: bool) -> None:
        super().__init__()
        groups = channels if depthwise else 1
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.conv(x)))


class Concat(nn.Module):
    def __init__(self, channels: int, a: int, b: int) -> None:
        super().__init__()
        self.left = nn.Conv2d(channels, a, 1)
        self.right = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.Conv2d(channels, b, 1))
        self.out_channels = a + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.left(x), self.right(x)], dim=1)


class Net(nn.Module):
    def __init__(self, blocks: list[tuple[str, int, bool]], classes: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        channels = 3
        for kind, width, flag in blocks:
            if kind == "conv":
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=flag), nn.ReLU()]
                channels = width
            elif kind == "depthwise":
                layers += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.BatchNorm2d(channels)]
            elif kind == "residual":
                layers.append(Residual(channels, depthwise=flag))
            else:
                block = Concat(channels, width, max(1, width // 2))
                layers.append(block)
                channels = block.out_channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


blocks = st.lists(
    st.tuples(st.sampled_from(["conv", "depthwise", "residual", "concat"]), st.integers(2, 12), st.booleans()),
    min_size=1,
    max_size=5,
)
models = st.builds(Net, blocks=blocks, classes=st.integers(1, 5), seed=st.integers(0, 2**16))
configs = st.builds(
    PruneConfig,
    target=st.floats(0.0, 0.95),
    importance=st.sampled_from([n for n in ("l1", "l2", "l1l2", "random", "magnitude_cubed") if n in modprune.list_importances()]),
    scope=st.sampled_from(["layer", "category", "global"]),
    steps=st.integers(1, 3),
    protect=st.lists(st.sampled_from(["conv", "depthwise_conv", "linear", "norm"]), max_size=2, unique=True).map(tuple),
    category_ratios=st.dictionaries(st.sampled_from(["conv", "depthwise_conv", "linear"]), st.floats(0.05, 0.95), max_size=2),
    max_ratio=st.sampled_from([1.0, 0.9]),
    pruner_options=st.fixed_dictionaries({"permanent": st.booleans()}),
    seed=st.integers(0, 100),
)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in effective_parameters(model)}


@SETTINGS
@given(model=models, config=configs)
def test_pruning_properties(model: Net, config: PruneConfig) -> None:
    x = torch.randn(*INPUT, generator=torch.Generator().manual_seed(0))
    model.eval()
    twin = copy.deepcopy(model)
    before = _params(model)
    categories = modprune.categorize(model).params
    out_before = model(x)
    try:
        report = modprune.prune(model, config)
    except UnreachableTargetError:
        assert all(torch.equal(before[n], t) for n, t in effective_parameters(model))  # nothing changed
        return
    # the target is met up to rounding to whole parameters
    assert abs(report.achieved - config.target) <= 0.5 / report.nonzero_before + 1e-12
    # protected categories, biases and norms are bit-identical
    after = _params(model)
    for name, tensor in after.items():
        category = categories.get(name) or categories[name.rpartition(".")[0] + ".parametrizations.weight.original"]
        if category in config.protect or tensor.ndim < 2:
            assert torch.equal(before[name], tensor), name
        assert not (before[name] == 0).logical_and(tensor != 0).any()  # nothing grows back
    # the forward still works, with the same output shape
    out_after = model(x)
    assert out_after.shape == out_before.shape and torch.isfinite(out_after).all()
    # the same seed gives the same masks
    modprune.prune(twin, config)
    assert all(torch.equal(t, after[n]) for n, t in effective_parameters(twin))


@SETTINGS
@given(model=models, target=st.floats(0.0, 0.5), permanent=st.booleans())
def test_save_load_round_trip_is_exact(model: Net, target: float, permanent: bool, tmp_path_factory: Any) -> None:
    path: Path = tmp_path_factory.mktemp("rt") / "m.pt"
    x = torch.randn(*INPUT, generator=torch.Generator().manual_seed(0))
    try:
        modprune.prune(model, PruneConfig(target=target, scope="global", pruner_options={"permanent": permanent}))
    except UnreachableTargetError:  # a model made mostly of norms
        assume(False)
    modprune.save(model, path)
    loaded = modprune.load(path)  # Net, a test class, is rebuilt from state: the file's manifest names it
    mine, theirs = dict(effective_parameters(model.eval())), dict(effective_parameters(loaded))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[n], theirs[n]) for n in mine)
    assert torch.equal(model(x), loaded(x))
