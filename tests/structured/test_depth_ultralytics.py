"""Depth pruning of a stock ultralytics detector (yolov8n from its yaml, 64 px): Bottlenecks removed whole;
the pruned model keeps its output shapes, saves and loads, trains a step, exports to ONNX; depth+structured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import modprune
from modprune.measure import count_macs
from modprune.measure.walk import tensors_of

from ._support import example, main_output

pytestmark = pytest.mark.usefixtures("offline_ultralytics")


def _shapes(model: nn.Module, x: torch.Tensor, feats: bool = True) -> list[tuple[int, ...]]:
    """Shapes of every returned tensor; without the neck maps the head returns beside its predictions
    (``feats``, which channel pruning narrows) when ``feats`` is False."""
    with torch.no_grad():
        out = model.eval()(x)
    if not feats and isinstance(out, tuple) and isinstance(out[-1], dict):
        out = (*out[:-1], {k: v for k, v in out[-1].items() if k != "feats"})
    return [tuple(t.shape) for t in tensors_of(out)]


def _bottlenecks(model: nn.Module) -> list[str]:
    from ultralytics.nn.modules.block import Bottleneck

    return [n for n, m in model.named_modules() if isinstance(m, Bottleneck)]


def test_offered_blocks_are_the_bottlenecks_with_a_shortcut(build, pm) -> None:
    model = build("yolov8n")
    offered = [b for found in pm.hook.modprune_removable_blocks(model=model) for b in found]
    names = [b.name for b in offered]
    # yolov8n: the backbone's C2f blocks have shortcuts (1 + 2 + 2 + 1 Bottlenecks), the head's do not
    assert names == ["model.2.m.0", "model.4.m.0", "model.4.m.1", "model.6.m.0", "model.6.m.1", "model.8.m.0"]
    assert len(_bottlenecks(model)) > len(names)
    assert all(b.kind == "residual" and b.removal == "identity" and b.module.add for b in offered)


def test_depth_pruned_yolov8n_keeps_shapes_saves_trains_and_exports(build, pm, tmp_path: Path) -> None:
    model = build("yolov8n")
    x = example()
    shapes = _shapes(model, x)
    report = modprune.prune(model, modprune.PruneConfig(method="depth", target=0.1, target_kind="macs"), x, pm=pm)
    assert report.achieved >= 0.1 and report.macs_after == count_macs(model, x)
    gone = [n for n, m in model.named_modules() if isinstance(m, nn.Identity) and n.startswith("model.")]
    assert gone and all(".m." in n for n in gone)
    assert _shapes(model, x) == shapes

    path = modprune.save(model, tmp_path / "depth.pt", pm=pm)
    loaded = modprune.load(path, pm=pm)  # the restricted loader accepts the nn.Identity replacements
    torch.testing.assert_close(main_output(loaded, x), main_output(model, x), atol=0, rtol=0)
    assert [n for n, m in loaded.named_modules() if isinstance(m, nn.Identity) and n.startswith("model.")] == gone

    loaded.train()
    for p in loaded.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.01)
    before = loaded.model[0].conv.weight.detach().clone()
    loss = sum(t.float().pow(2).mean() for t in tensors_of(loaded(example(batch=2))))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(loaded.model[0].conv.weight, before)

    pytest.importorskip("onnx")
    from modprune.evaluate import export_onnx

    onnx_path = export_onnx(model, tmp_path / "depth.onnx", 64)
    assert onnx_path.stat().st_size > 0


def test_depth_structured_on_yolov8n(build, pm) -> None:
    model = build("yolov8n")
    x = example()
    shapes = _shapes(model, x, feats=False)
    config = modprune.PruneConfig(method="depth+structured", target=0.3, importance="l2",
                                  pruner_options={"depth_share": 0.3, "round_to": 8})
    report = modprune.prune(model, config, x, pm=pm)
    assert abs(report.achieved - 0.3) <= 0.02
    assert any(n.startswith("depth: step 1/1: removed") for n in report.notes)
    assert any(n.startswith("structured: step") for n in report.notes)
    assert _shapes(model, x, feats=False) == shapes
