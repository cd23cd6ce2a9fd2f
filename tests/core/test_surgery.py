"""modprune.surgery: exact slicing, splitting and merging of conv blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modprune import UnsupportedModelError
from modprune.surgery import (
    conv_of,
    copy_block,
    merge_conv_blocks,
    merge_per_channel,
    slice_batchnorm,
    slice_conv_block,
    slice_conv_in,
    slice_conv_out,
    slice_per_channel,
    split_conv_block,
)

SHARED_ACT = nn.SiLU()


class ConvBlock(nn.Module):
    """conv, BatchNorm, a shared activation: the layout of ultralytics' Conv."""

    def __init__(self, c1: int, c2: int, k: int = 3, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, padding=k // 2, bias=bias)
        self.bn = nn.BatchNorm2d(c2)
        self.act = SHARED_ACT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _randomise(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module.eval()


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("bias", [False, True])
def test_split_parts_concatenate_to_the_block_output(bias: bool) -> None:
    block = _randomise(ConvBlock(4, 10, bias=bias))
    before = _state(block)
    parts = split_conv_block(block, (3, 7), "model.cv1")
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([p(x) for p in parts], 1), block(x))
    assert [conv_of(p).out_channels for p in parts] == [3, 7]
    assert [p.bn.num_features for p in parts] == [3, 7]
    for key, value in parts[1].state_dict().items():  # sliced, never recomputed
        if value.dim():
            assert torch.equal(value, before[key][3:10]), key
    assert all(torch.equal(v, before[k]) for k, v in block.state_dict().items())  # the block is untouched


def test_merge_inverts_split_exactly() -> None:
    block = _randomise(ConvBlock(4, 9, bias=True))
    merged = merge_conv_blocks(split_conv_block(block, (2, 3, 4)))
    assert merged.state_dict().keys() == block.state_dict().keys()
    for key, value in block.state_dict().items():
        assert torch.equal(merged.state_dict()[key], value), key
    assert conv_of(merged).out_channels == 9 and merged.bn.num_features == 9


def test_copies_share_stateless_children_only() -> None:
    block = ConvBlock(3, 4)
    new = copy_block(block)
    assert new.act is block.act
    assert new.conv is not block.conv and new.bn is not block.bn
    assert slice_conv_block(block, slice(0, 2)).act is SHARED_ACT


def test_requires_grad_and_training_mode_follow_the_source() -> None:
    block = ConvBlock(3, 4).train()
    block.conv.weight.requires_grad_(False)
    part = slice_conv_block(block, [0, 3])
    assert not part.conv.weight.requires_grad and part.bn.weight.requires_grad
    assert part.training and part.bn.training


def test_channel_indices_select_like_a_slice() -> None:
    bn = _randomise(nn.BatchNorm2d(5))
    mean, weight = bn.running_mean.clone(), bn.weight.detach().clone()
    slice_batchnorm(bn, [4, 1])
    assert bn.num_features == 2
    assert torch.equal(bn.running_mean, mean[[4, 1]]) and torch.equal(bn.weight.detach(), weight[[4, 1]])


def test_slice_conv_in_drops_inputs() -> None:
    conv = nn.Conv2d(6, 4, 3, padding=1)
    x = torch.randn(1, 6, 5, 5)
    keep = [0, 2, 5]
    zeroed = torch.zeros_like(x)
    zeroed[:, keep] = x[:, keep]
    with torch.no_grad():
        expected = conv(zeroed)
        slice_conv_in(conv, keep)
        assert conv.in_channels == 3 and conv.weight.shape[1] == 3
        torch.testing.assert_close(conv(x[:, keep]), expected)


def test_depthwise_conv_keeps_groups_equal_to_channels() -> None:
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    slice_conv_out(conv, slice(1, 4))
    assert (conv.in_channels, conv.out_channels, conv.groups) == (3, 3, 3)
    conv2 = nn.Conv2d(6, 6, 1, groups=6)
    slice_conv_in(conv2, [0, 5])
    assert (conv2.in_channels, conv2.out_channels, conv2.groups) == (2, 2, 2)
    conv2(torch.randn(1, 2, 3, 3))


def test_per_channel_block_round_trip() -> None:
    block = _randomise(nn.Sequential(nn.Conv2d(6, 6, 1, groups=6), nn.BatchNorm2d(6), nn.SiLU()))
    parts = [slice_per_channel(block, slice(0, 2)), slice_per_channel(block, slice(2, 6))]
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([parts[0](x[:, :2]), parts[1](x[:, 2:])], 1), block(x))
    merged = merge_per_channel(parts)
    assert all(torch.equal(merged.state_dict()[k], v) for k, v in block.state_dict().items())
    assert merged[0].groups == 6


@pytest.mark.parametrize(
    "block,widths,match",
    [
        (nn.Conv2d(4, 8, 3, groups=2), (4, 4), "grouped"),
        (ConvBlock(4, 8), (4, 3), "cannot be split"),
        (ConvBlock(4, 8), (8, 0), "cannot be split"),
        (nn.Linear(4, 8), (4, 4), "expected an nn.Conv2d"),
    ],
    ids=["grouped", "widths-sum", "zero-width", "not-a-conv"],
)
def test_unsliceable_blocks_raise_naming_the_block(block: nn.Module, widths: tuple[int, ...], match: str) -> None:
    with pytest.raises(UnsupportedModelError, match=match) as info:
        split_conv_block(block, widths, "model.3.cv1")
    assert "model.3.cv1" in str(info.value) and info.value.obj == "model.3.cv1"


def test_other_stateful_children_are_refused() -> None:
    block = ConvBlock(3, 4)
    block.extra = nn.BatchNorm2d(4)  # a second per-channel module the toolkit does not know how to slice
    with pytest.raises(UnsupportedModelError, match="extra"):
        slice_conv_block(block, slice(0, 2))
    with pytest.raises(UnsupportedModelError, match="depthwise"):
        slice_per_channel(nn.Sequential(nn.Conv2d(4, 4, 1)), slice(0, 2))
