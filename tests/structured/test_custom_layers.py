"""Models torch-pruning cannot handle by itself: clear errors, and the hooks that make them prunable."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

import modprune
from modprune import hookimpl


def _config(target: float = 0.3) -> modprune.PruneConfig:
    return modprune.PruneConfig(method="structured", target=target, importance="l2")


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _net(middle: nn.Module, width: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        middle,
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    ).eval()


# --- errors name the module --------------------------------------------------------------------


class NumpyGate(nn.Module):
    """Leaves autograd through numpy: fine under no_grad, untraceable by torch-pruning."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * float(np.abs(y.numpy()).mean())


def test_untraceable_module_is_named(pm) -> None:
    model = _net(NumpyGate(16))
    with pytest.raises(modprune.UnsupportedModelError, match=r"3 \(NumpyGate\).*modprune_register_layer_pruners") as info:
        modprune.prune(model, _config(), _image(), pm=pm)
    assert "tracing" in str(info.value)


class PositionalBias(nn.Module):
    """A bare (1, C, H, W) parameter: which dimension holds channels is ambiguous."""

    def __init__(self, width: int, size: int = 16) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, width, size, size) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos


def test_ambiguous_bare_parameter_is_named_and_nothing_changes(pm) -> None:
    model = _net(PositionalBias(16))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    with pytest.raises(modprune.UnsupportedModelError, match=r"3\.pos .*3 \(PositionalBias\).*modprune_unwrapped_parameters"):
        modprune.prune(model, _config(), _image(), pm=pm)
    assert {n: p.shape for n, p in model.named_parameters()} == shapes


class DeclarePositionalBias:
    """A plugin declaring the channel dimension of PositionalBias.pos."""

    @hookimpl
    def modprune_unwrapped_parameters(self, model: nn.Module) -> list[tuple[Any, int]]:
        return [(m.pos, 1) for m in model.modules() if isinstance(m, PositionalBias)]


def test_declared_bare_parameter_is_pruned_along_its_channel_dim() -> None:
    pm = modprune.get_plugin_manager(plugins=[DeclarePositionalBias()])
    model = _net(PositionalBias(16))
    report = modprune.prune(model, _config(0.4), _image(), pm=pm)
    assert abs(report.achieved - 0.4) <= 0.01
    width = model[0].out_channels
    assert width < 16 and model[3].pos.shape == (1, width, 16, 16)
    assert model(_image()).shape == (1, 10)


class ChannelScale(nn.Module):
    """A bare per-channel (C, 1, 1) scale (like ConvNeXt's layer scale) and a scalar gate."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(width, 1, 1) + 0.5)
        self.gate = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale * self.gate


def test_single_channel_dim_bare_parameters_are_handled_and_reported(pm) -> None:
    model = _net(ChannelScale(16))
    report = modprune.prune(model, _config(0.4), _image(), pm=pm)
    width = model[0].out_channels
    assert model[3].scale.shape == (width, 1, 1) and model[3].gate.shape == ()
    assert any("3.scale in 3 (ChannelScale)" in n for n in report.notes)


# --- a layer pruner registered through modprune_register_layer_pruners ----------------------------


class FunctionalConv(nn.Module):
    """A convolution holding its own weight, applied with F.conv2d (torch-pruning has no rule for it)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3) * 0.1)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=1)


class FunctionalConvPruner(tp.pruner.function.BasePruningFunc):
    """How to remove output / input channels of a FunctionalConv."""

    TARGET_MODULES = (FunctionalConv,)

    @staticmethod
    def _keep(total: int, idxs: Sequence[int]) -> list[int]:
        drop = set(int(i) for i in idxs)
        return [i for i in range(total) if i not in drop]

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = self._keep(layer.weight.shape[0], idxs)
        layer.weight = nn.Parameter(layer.weight.data[keep].clone())
        layer.bias = nn.Parameter(layer.bias.data[keep].clone())
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = self._keep(layer.weight.shape[1], idxs)
        layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[1]


class FunctionalConvPlugin:
    @hookimpl
    def modprune_register_layer_pruners(self) -> list[tuple[type, Any]]:
        return [(FunctionalConv, FunctionalConvPruner())]


def test_custom_layer_without_a_rule_is_refused(pm) -> None:
    with pytest.raises(modprune.UnsupportedModelError, match=r"3\.weight .*3 \(FunctionalConv\)"):
        modprune.prune(_net(FunctionalConv(16, 16)), _config(), _image(), pm=pm)


def test_registered_layer_pruner_makes_a_custom_layer_prunable() -> None:
    pm = modprune.get_plugin_manager(plugins=[FunctionalConvPlugin()])
    model = _net(FunctionalConv(16, 24))
    model[4] = nn.Conv2d(24, 32, 3, padding=1)
    report = modprune.prune(model, _config(0.4), _image(), pm=pm)
    assert abs(report.achieved - 0.4) <= 0.02, report.notes
    custom = model[3]
    assert custom.weight.shape[1] == model[0].out_channels < 16
    assert custom.weight.shape[0] == model[4].in_channels < 24
    assert model(_image()).shape == (1, 10)
