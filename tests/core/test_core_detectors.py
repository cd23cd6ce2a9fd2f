"""Detectors and classification: precedence, full coverage, types not names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modprune
from modprune.detectors import BLOCK_PRIORITY, HEAD_PRIORITY, OTHER, Detector, by_type, classify
from modprune.exceptions import UnsupportedModelError


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.out = nn.Conv2d(4, 2, 1)


class Block(nn.Module):
    def __init__(self, inner: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3)
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.inner = Inner() if inner else None


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.norm = nn.BatchNorm2d(4)


def detectors() -> list[Detector]:
    return [
        by_type("conv", "conv", nn.Conv2d),
        by_type("dw", "depthwise_conv", nn.Conv2d, priority=5, where=lambda m: m.groups == m.in_channels > 1),
        by_type("norm", "norm", nn.BatchNorm2d),
        by_type("block", "block", Block, priority=BLOCK_PRIORITY),
        by_type("inner", "inner", Inner, priority=BLOCK_PRIORITY),
        by_type("head", "head", Head, priority=HEAD_PRIORITY),
    ]


def test_head_beats_block_beats_layer() -> None:
    model = nn.Sequential(Head(), Block(inner=False), nn.Conv2d(4, 4, 1))
    cats = classify(model, detectors()).params
    assert {cats[n] for n in cats if n.startswith("0.")} == {"head"}  # everything inside the head
    assert cats["1.conv.weight"] == cats["1.dw.weight"] == "block"  # a block covers its layers
    assert cats["2.weight"] == "conv"


def test_deeper_wins_at_equal_priority() -> None:
    model = nn.Sequential(Block())
    cats = classify(model, detectors())
    assert cats.params["0.conv.weight"] == "block"
    assert cats.params["0.inner.conv.weight"] == cats.params["0.inner.norm.weight"] == "inner"
    assert cats.modules["0.inner"] == "inner" and cats.detector["0.inner"] == "inner"


def test_depthwise_beats_conv_on_the_same_module() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(1, 1, 3, groups=1))
    cats = modprune.categorize(model)
    assert [cats.params[f"{i}.weight"] for i in range(3)] == ["depthwise_conv", "conv", "conv"]


def test_builtin_categories_by_type() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 8), nn.LayerNorm(8), nn.MultiheadAttention(8, 2)
    )
    cats = modprune.categorize(model)
    assert cats.params["0.weight"] == cats.params["0.bias"] == "conv"
    assert cats.params["1.weight"] == "norm" and cats.params["3.weight"] == "linear" and cats.params["4.weight"] == "norm"
    # the attention block covers its inner Linear (out_proj), and its bare in_proj parameters
    assert cats.params["5.in_proj_weight"] == cats.params["5.out_proj.weight"] == "attention"


def test_types_not_names() -> None:
    model = nn.Sequential()
    model.add_module("attention", nn.Conv2d(3, 3, 1))
    model.add_module("conv", nn.MultiheadAttention(4, 1))
    model.add_module("head", nn.Linear(3, 3))
    cats = modprune.categorize(model)
    assert cats.params["attention.weight"] == "conv"
    assert cats.params["conv.in_proj_weight"] == "attention"
    assert cats.params["head.weight"] == "linear"


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.lstm = nn.LSTM(3, 3)
        self.emb = nn.Embedding(4, 3)


def test_every_parameter_gets_a_category(cnn: nn.Module) -> None:
    for model in (cnn, nn.Sequential(Odd(), nn.Conv2d(3, 3, 1)), Head(), nn.Linear(2, 2)):
        cats = modprune.categorize(model)
        assert set(cats.params) == {n for n, _ in model.named_parameters()}
        assert set(cats.modules) == {n for n, _ in model.named_modules()}
        assert all(isinstance(c, str) and c for c in cats.params.values())
    cats = modprune.categorize(nn.Sequential(Odd()))
    assert cats.params["0.scale"] == cats.params["0.lstm.weight_ih_l0"] == OTHER
    assert cats.detector["0"] is None


def test_masked_parameters_keep_their_category(cnn: nn.Module) -> None:
    modprune.prune(cnn, modprune.PruneConfig(target=0.2, pruner_options={"permanent": False}))
    cats = modprune.categorize(cnn)
    assert cats.params["0.parametrizations.weight.original"] == "conv"
    assert cats.params["9.parametrizations.weight.original"] == "linear"


def test_category_helpers(cnn: nn.Module) -> None:
    cats = modprune.categorize(cnn)
    assert cats.param_names("linear") == ["9.weight", "9.bias"]
    counts = cats.counts(cnn)
    assert sum(counts.values()) == sum(p.numel() for p in cnn.parameters())
    assert set(modprune.valid_categories()) >= {"conv", "depthwise_conv", "linear", "norm", "attention", OTHER}


def test_a_failing_detector_is_named() -> None:
    def explode(module: nn.Module, name: str) -> bool:
        raise AttributeError("no such attribute")

    with pytest.raises(UnsupportedModelError, match="'boom'.*'1'.*ReLU"):
        classify(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()), [Detector("boom", "x", lambda m, n: isinstance(m, nn.ReLU) and explode(m, n))])
