"""Depth pruning of TokenC3-LSNet blocks: what the plugin offers, removal keeps shapes, the mixers go
exactly as ``use_dllm=False``, save/load through the restricted loader, one training step."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.modules import Bottleneck, Conv

import modprune
from modprune.measure.walk import tensors_of
from modprune_tokenc3_lsnet import blocks as B


class Small(nn.Module):
    """stem -> TokenC3 (two LS and two regular residual bottlenecks) -> DSC3k (two DSBottlenecks) -> 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv(3, 32, 3, 2)
        self.block = B.TokenC3(32, 64, n=2, shortcut=True, g=4)
        self.ds = B.DSC3k(64, 64, n=2)
        self.plain = B.TokenC3(64, 64, n=1, shortcut=False)
        self.out = nn.Conv2d(64, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.plain(self.ds(self.block(self.stem(x)))))


def _small() -> nn.Module:
    torch.manual_seed(0)
    model = Small()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_the_plugin_offers_its_residual_blocks_and_mixers() -> None:
    model = _small()
    pm = modprune.get_plugin_manager()
    offered = {b.name: (type(b.module), b.kind, b.removal) for f in pm.hook.modprune_removable_blocks(model=model)
               for b in f}
    ghost, mixer, ds = B.LSGhostBottleneck, B.DynamicLocalMixer, B.DSBottleneck
    expected = {
        "block.ls_bottlenecks.0": (ghost, "residual", "identity"),
        "block.ls_bottlenecks.1": (ghost, "residual", "identity"),
        "block.ls_bottlenecks.0.dllm": (mixer, "optional", "none"),
        "block.ls_bottlenecks.1.dllm": (mixer, "optional", "none"),
        "plain.ls_bottlenecks.0.dllm": (mixer, "optional", "none"),  # no shortcut: only the mixer goes
        "ds.m.0": (ds, "residual", "identity"),
        "ds.m.1": (ds, "residual", "identity"),
        # the regular chain's ultralytics Bottlenecks come from the ultralytics integration
        "block.regular_bottlenecks.0": (Bottleneck, "residual", "identity"),
        "block.regular_bottlenecks.1": (Bottleneck, "residual", "identity"),
    }
    assert offered == expected


def test_removing_a_mixer_is_exactly_use_dllm_false() -> None:
    torch.manual_seed(0)
    block = B.LSGhostBottleneck(16, 16, 7, 3, True, 1.0, True).eval()
    x = torch.randn(1, 16, 8, 8)
    model = nn.Sequential(block)
    pm = modprune.get_plugin_manager()
    config = modprune.PruneConfig(method="depth", target=0.4, target_kind="blocks", pruner_options={"kinds": ["optional"]})
    modprune.prune(model, config, example_inputs=x, pm=pm)
    assert block.dllm is None and "dllm" not in "".join(block.state_dict())
    assert model.training and not block.training  # every module keeps its own mode
    no_mixer = B.LSGhostBottleneck(16, 16, 7, 3, True, 1.0, use_dllm=False).eval()
    no_mixer.load_state_dict(block.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(block(x), no_mixer(x), atol=0, rtol=0)


def test_depth_pruned_tokenc3_keeps_shapes_saves_loads_and_trains(tmp_path: Path) -> None:
    model = _small()
    pm = modprune.get_plugin_manager()
    shape = model(X).shape
    report = modprune.prune(model, modprune.PruneConfig(method="depth", target=0.2, target_kind="macs"), X, pm=pm)
    assert report.achieved >= 0.2 and model(X).shape == shape
    assert any(isinstance(m, nn.Identity) for m in model.block.ls_bottlenecks)
    path = modprune.save(model.block, tmp_path / "depth.pt", pm=pm)  # the plugin's TokenC3, Identity inside
    block = modprune.load(path, pm=pm)  # the restricted loader: no trust_pickle
    inner = model.stem(X)
    with torch.no_grad():
        torch.testing.assert_close(block(inner), model.block(inner), atol=0, rtol=0)
    loaded = copy.deepcopy(model)
    loaded.train()
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.01)
    loss = sum(t.pow(2).mean() for t in tensors_of(loaded(torch.randn(2, 3, 32, 32))))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
