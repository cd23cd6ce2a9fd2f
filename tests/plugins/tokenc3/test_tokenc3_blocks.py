"""Unit tests of the TokenC3-LSNet / YOLOv13 blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modprune_tokenc3_lsnet.blocks import (
    C3AH,
    AdaHyperedgeGen,
    DownsampleConv,
    DSC3k2,
    DSConv,
    DynamicLocalMixer,
    FullPAD_Tunnel,
    HyperACE,
    LSConv,
    TokenC3,
)
from modprune_tokenc3_lsnet.blocks.lsnet import split_ls_reg


def test_dllm_vectorised_dynamic_conv_matches_per_sample_reference():
    torch.manual_seed(0)
    mixer = DynamicLocalMixer(6, kernel_size=3).eval()
    x = torch.randn(3, 6, 7, 5)
    with torch.no_grad():
        got = mixer.dynamic_conv(x)
        kernels = mixer.weight_gen(x).view(3, 6, 1, 3, 3)
        want = torch.stack([F.conv2d(x[b : b + 1], kernels[b], padding=1, groups=6)[0] for b in range(3)])
    torch.testing.assert_close(got, want)
    # and channel by channel, per sample, for one entry
    one = F.conv2d(x[1:2, 4:5], kernels[1, 4:5], padding=1)
    torch.testing.assert_close(got[1:2, 4:5], one)


def test_dllm_batch_independent():
    torch.manual_seed(0)
    mixer = DynamicLocalMixer(8).eval()
    x = torch.randn(4, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x)[2:3], mixer(x[2:3]))


@pytest.mark.parametrize(
    ("hidden", "groups", "expected"), [(32, 1, (19, 13)), (64, 1, (38, 26)), (64, 4, (36, 28)), (30, 4, (18, 12))]
)
def test_tokenc3_split(hidden, groups, expected):
    assert split_ls_reg(hidden, groups) == expected


def test_tokenc3_group_quirk_and_forward():
    block = TokenC3(16, 32, 1, True, 0.25)  # yaml 0.25 -> groups 1
    assert block.regular_bottlenecks[0].cv2.conv.groups == 1
    grouped = TokenC3(32, 32, 2, True, 4)
    assert (grouped.ls_channels, grouped.reg_channels) == (8, 8)
    assert grouped.regular_bottlenecks[0].cv2.conv.groups == 4
    assert grouped.cv1.large_branch[0].groups == 4
    assert grouped(torch.randn(2, 32, 8, 8)).shape == (2, 32, 8, 8)


def test_lsconv_groups_fall_back_when_indivisible():
    assert LSConv(12, 10, groups=4).large_branch[0].groups == 1  # 5 and 5 are not multiples of 4
    block = LSConv(8, 16, groups=4)
    assert block.large_branch[0].groups == 4
    assert block.fusion_weight.tolist() == pytest.approx([0.4, 0.6])
    assert block(torch.randn(1, 8, 9, 9)).shape == (1, 16, 9, 9)


def test_dsconv_structure():
    conv = DSConv(8, 16, 3, 2)
    assert conv.dw.groups == 8 and conv.dw.bias is None and conv.pw.bias is None
    assert conv(torch.randn(1, 8, 10, 10)).shape == (1, 16, 5, 5)


def test_dsc3k2_and_downsample():
    assert DSC3k2(16, 32, 2, True)(torch.randn(1, 16, 8, 8)).shape == (1, 32, 8, 8)
    assert DSC3k2(16, 32, 1, False)(torch.randn(1, 16, 8, 8)).shape == (1, 32, 8, 8)
    assert DownsampleConv(8)(torch.randn(1, 8, 8, 8)).shape == (1, 16, 4, 4)
    assert DownsampleConv(8, False)(torch.randn(1, 8, 8, 8)).shape == (1, 8, 4, 4)


def test_fullpad_gate_starts_closed():
    tunnel = FullPAD_Tunnel()
    a, b = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    assert tunnel.gate.shape == () and tunnel.gate.item() == 0.0
    torch.testing.assert_close(tunnel([a, b]), a)


def test_hyperedge_participation_is_softmax_over_nodes():
    gen = AdaHyperedgeGen(32, 4, num_heads=2).eval()
    a = gen(torch.randn(2, 10, 32))
    assert a.shape == (2, 10, 4)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 4))
    with pytest.raises(ValueError):
        AdaHyperedgeGen(30, 4, num_heads=4)


def test_c3ah_requires_multiple_of_16():
    with pytest.raises(ValueError):
        C3AH(24, 24)
    assert C3AH(32, 32)(torch.randn(1, 32, 4, 4)).shape == (1, 32, 4, 4)


@pytest.mark.parametrize("adjust", [True, False])
def test_hyperace_forward(adjust):
    c = 32
    block = HyperACE(c, 64, 2, 4, True, True, 0.5, 1, "both", adjust).eval()
    x2 = torch.randn(1, 2 * c if adjust else c, 4, 4)
    y = block([torch.randn(1, c, 16, 16), torch.randn(1, c, 8, 8), x2])
    assert y.shape == (1, 64, 8, 8)
    assert block.cv2.conv.in_channels == (4 + 2) * 32


def test_plugin_batchnorms_use_ultralytics_settings():
    # BNs built by the plugin itself; those inside ultralytics' Conv get them from initialize_weights
    bns = [LSConv(8, 8).large_branch[1], DSConv(4, 8).bn, DynamicLocalMixer(8).norm, TokenC3(8, 8).cross_interaction[1]]
    assert all(type(m) is nn.BatchNorm2d and m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


def test_fuse_folds_the_plugins_pairs_and_keeps_outputs() -> None:
    """modprune.fuse folds every foldable conv + BN pair of TokenC3-LSNet-n (the Sequential ones and, through
    the plugin's hook, each DSConv's); only the DynamicLocalMixers' norms (a BN over a sum) stay."""
    import modprune
    from modprune.integrations.ultralytics import ensure_offline

    ensure_offline()
    torch.manual_seed(0)
    model = modprune.load("yolov13n_lsnet_p2_simple.yaml").eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    from modprune_tokenc3_lsnet.blocks import DSConv, DynamicLocalMixer

    fused = modprune.fuse(model)
    left = [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    mixers = [m for m in fused.modules() if isinstance(m, DynamicLocalMixer)]
    assert len(left) == len(mixers) and all(any(b is mx.norm for mx in mixers) for b in left)
    assert all(isinstance(m.bn, torch.nn.Identity) for m in fused.modules() if isinstance(m, DSConv))
    x = torch.randn(1, 3, 64, 64, generator=gen)
    with torch.no_grad():
        a, b = model(x), fused(x)
    a, b = (a[0], b[0]) if isinstance(a, (tuple, list)) else (a, b)
    assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())
