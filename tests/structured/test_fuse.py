"""modprune.fuse: conv + BatchNorm folding, exact on every built-in model family and the plugin's."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modprune
from modprune.exceptions import UnsupportedModelError
from modprune.fusion import fold_conv_bn, fusable_pairs, sequential_pairs

from ._support import base_model, example, main_output, randomise_norms

TOL = 1e-4


def _bns(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= TOL * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("conv, bn", [
    (nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)),
    (nn.Conv2d(4, 6, 3, bias=False, groups=2), nn.BatchNorm2d(6, affine=False)),
    (nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False), nn.BatchNorm2d(6, eps=1e-3)),
    (nn.Conv1d(3, 5, 3), nn.BatchNorm1d(5)),
])
def test_fold_conv_bn_is_exact(conv: nn.Module, bn: nn.Module) -> None:
    seq = nn.Sequential(conv, bn)
    randomise_norms(seq)
    if not bn.affine:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    seq.eval()
    x = torch.randn(2, conv.in_channels, *([9] * (conv.weight.dim() - 2)))
    with torch.no_grad():
        expected = seq(x)
        fold_conv_bn(conv, bn)
        got = conv(x)
    _assert_same(expected, got)
    assert conv.bias is not None


def test_fold_refuses_what_is_not_a_pair() -> None:
    with pytest.raises(UnsupportedModelError, match="channels"):
        fold_conv_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
    with pytest.raises(UnsupportedModelError, match="running statistics"):
        fold_conv_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(UnsupportedModelError, match="transposed"):
        fold_conv_bn(nn.ConvTranspose2d(3, 4, 2), nn.BatchNorm2d(4))


class _Custom(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # BN not after the conv: must not fold
        return self[0](x) + self[1](x)


def test_sequential_rule_only_trusts_plain_sequential_order() -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    assert len(sequential_pairs(plain)) == 2
    assert sequential_pairs(_Custom(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))) == []


def test_fuse_returns_an_eval_copy_by_default_and_can_work_in_place() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU()).train()
    randomise_norms(model)
    fused = modprune.fuse(model)
    assert fused is not model and not fused.training and model.training
    assert _bns(model) == 1 and _bns(fused) == 0 and isinstance(fused[1], nn.Identity)
    x = torch.randn(1, 3, 8, 8)
    _assert_same(model.eval()(x), fused(x))
    same = modprune.fuse(model, inplace=True)
    assert same is model and _bns(model) == 0


def test_fuse_bakes_pruning_masks_and_keeps_the_zeros() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
    randomise_norms(model)
    modprune.prune(model, modprune.PruneConfig(target=0.5, pruner_options={"permanent": False}))
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        expected = model.eval()(x)
    fused = modprune.fuse(model)
    assert torch.nn.utils.parametrize.is_parametrized(model[0])  # the caller's masks stay
    _assert_same(expected, fused(x))
    assert (fused[0].weight == 0).float().mean() > 0.2


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class _Plugin:
    @modprune.hookimpl
    def modprune_fusable_pairs(self, model: nn.Module) -> list:
        return [(m.conv, m.norm) for m in model.modules() if isinstance(m, _Block)] + ["junk"]


def test_plugins_report_pairs_through_the_hook() -> None:
    pm = modprune.get_plugin_manager()
    model = nn.ModuleList([_Block()])
    assert fusable_pairs(model, pm) == []  # a ModuleList has no forward: nothing to trace
    pm.register(_Plugin(), name="fusable-test")
    assert len(fusable_pairs(model, pm)) == 1
    fused = modprune.fuse(model, pm=pm)
    assert _bns(fused) == 0 and isinstance(fused[0].norm, nn.Identity)


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "resnet18"])
def test_fused_equals_unfused_on_builtin_families(name: str) -> None:
    model = copy.deepcopy(base_model(name))
    x = example(64)
    fused = modprune.fuse(model)
    assert _bns(fused) == 0  # every pair folded (ultralytics via its hook; torchvision via the trace)
    _assert_same(main_output(model, x), main_output(fused, x))
    assert _bns(model) > 0  # the original is untouched
