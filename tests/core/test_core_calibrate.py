"""BatchNorm recalibration and the ``bn_l1`` channel importance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn

import modprune
from modprune.exceptions import DatasetError, ModpruneError


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Conv2d(4, 6, 1),
                         nn.BatchNorm2d(6), nn.Flatten(), nn.LazyLinear(2))


def test_calibration_gives_the_exact_statistics_and_restores_modes() -> None:
    model = _net()
    x = [torch.rand(4, 3, 8, 8) for _ in range(3)]
    model(x[0])  # materialise the lazy layer
    model.train()
    model[2].eval()  # a mixed pattern of modes must come back
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    used = modprune.calibrate_batchnorm(model, x, batches=2)
    assert used == 2
    per_batch_vars = torch.stack([model[0](b).transpose(0, 1).reshape(4, -1).var(dim=1) for b in x[:2]])
    per_batch_means = torch.stack([model[0](b).mean(dim=(0, 2, 3)) for b in x[:2]])
    assert torch.allclose(model[1].running_mean, per_batch_means.mean(0), atol=1e-5)  # cumulative average
    assert torch.allclose(model[1].running_var, per_batch_vars.mean(0), atol=1e-5)
    assert model[1].momentum == 0.3 and model[4].momentum == 0.1
    assert [m.training for m in model] == [True, True, False, True, True, True, True]
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert all(p.grad is None for p in model.parameters())


def test_calibration_in_eval_model_uses_only_bn_train_mode() -> None:
    """Modules other than BatchNorm stay in eval mode during calibration (dropout off)."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(self.training)
            return x

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), Probe()).eval()
    modprune.calibrate_batchnorm(model, torch.rand(2, 3, 4, 4))
    assert seen == [False] and not model.training


def test_failed_or_empty_calibration_keeps_statistics() -> None:
    model = _net()
    model(torch.rand(2, 3, 8, 8))
    model[1].running_mean.fill_(0.5)
    before = model[1].running_mean.clone()
    with pytest.raises(ModpruneError, match="no calibration batch"):
        modprune.calibrate_batchnorm(model, [])
    assert torch.equal(model[1].running_mean, before)
    with pytest.raises(RuntimeError):
        modprune.calibrate_batchnorm(model, [torch.rand(2, 3, 8, 8), torch.rand(2, 5, 8, 8)])
    assert torch.equal(model[1].running_mean, before)
    with pytest.raises(ModpruneError, match="positive integer"):
        modprune.calibrate_batchnorm(model, [torch.rand(2, 3, 8, 8)], batches=0)


def test_image_batches_and_loader_items(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "sub").mkdir()
    for i in range(5):
        Image.new("RGB", (20 + i, 10), (i * 40, 0, 255)).save(tmp_path / "sub" / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    batches = list(modprune.image_batches(tmp_path, 16, batch_size=2))
    assert [b.shape for b in batches] == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    assert batches[0].min() >= 0 and batches[0].max() <= 1
    assert torch.allclose(batches[0][:, :, 0, 0], torch.tensor(114 / 255))  # letterbox padding
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    uint8 = (torch.rand(2, 3, 4, 4) * 255).to(torch.uint8)
    assert modprune.calibrate_batchnorm(model, [{"img": uint8}, (uint8, "labels")]) == 2
    with pytest.raises(DatasetError, match="not a directory"):
        list(modprune.image_batches(tmp_path / "sub" / "0.png", 16))  # a file, not a folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        list(modprune.image_batches(tmp_path / "empty", 16))


def test_bn_l1_scores_gamma_times_next_input_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([2.0, -1.0, 0.5, 3.0]))
        model[3].weight[:, 3] = 0  # the largest gamma feeds nothing downstream
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.rand(1, 3, 8, 8))
    group = graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(4)))
    scores = modprune.get_plugin_manager().strategies.importances.get("bn_l1").channel_importance()(group)
    expected = model[1].weight.abs() * model[3].weight.abs().sum(dim=(0, 2, 3))
    assert torch.allclose(scores, expected.detach())
    assert int(scores.argmin()) == 3  # bn_scale alone would keep channel 3 first
    bn_only = tp.importance.BNScaleImportance()(group)
    assert int(bn_only.argmax()) == 3


def test_bn_l1_prunes_structured_and_model_runs() -> None:
    model = _net()
    x = torch.rand(1, 3, 8, 8)
    model(x)
    model.eval()
    report = modprune.prune(model, modprune.PruneConfig(method="structured", target=0.3, importance="bn_l1"), x)
    assert report.achieved >= 0.25
    assert model(x).shape == (1, 2)
