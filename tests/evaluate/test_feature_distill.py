"""Feature-level (channel-wise) distillation: gradients reach the student and adapters only, zero when equal,
one real training run with ``distill="both"`` on a tiny pruned model."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch

pytest.importorskip("ultralytics")

from modprune.exceptions import ConfigError  # noqa: E402


def _models():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolov8n.yaml", nc=1, verbose=False)


def test_cwd_loss_zero_when_equal_positive_otherwise() -> None:
    from modprune.integrations.ultralytics.feature_distill import channel_wise_distillation_loss as cwd

    g = torch.Generator().manual_seed(0)
    t = [torch.randn(2, 8, 4, 4, generator=g), torch.randn(2, 16, 2, 2, generator=g)]
    assert float(cwd([x.clone() for x in t], t)) == pytest.approx(0.0, abs=1e-6)
    s = [x + torch.randn(x.shape, generator=g) for x in t]
    assert float(cwd(s, t)) > 0.01
    with pytest.raises(ConfigError):
        cwd(s[:1], t)
    with pytest.raises(ConfigError):
        cwd([s[1], s[0]], t)


def test_gradients_reach_student_and_adapters_only(offline_ultralytics: Path) -> None:
    from modprune.integrations.ultralytics import feature_distill as fd
    from modprune.integrations.ultralytics.trainer import DetectionDistillationLoss

    teacher = _models().eval()
    student = copy.deepcopy(teacher)
    student.model[-1].cv2[0][0].conv.weight.data.mul_(0.5)  # differ a little
    widths_s, widths_t = fd.probe_widths(student), fd.probe_widths(teacher)
    assert widths_s == widths_t == [64, 128, 256]
    # a narrower student view: one level with fewer channels needs a learned adapter
    adapters = fd.FeatureAdapters([32, 128, 256], widths_t)
    assert isinstance(adapters.maps[1], torch.nn.Identity) and isinstance(adapters.maps[0], torch.nn.Conv2d)
    taps = fd.FeatureTap(student), fd.FeatureTap(teacher)

    class _Narrow(torch.nn.Module):  # student level 0 sliced to 32 channels before its adapter
        def forward(self, feats):
            return adapters([feats[0][:, :32], *feats[1:]])

    for p in teacher.parameters():
        p.requires_grad_(False)
    base = lambda preds, batch: (torch.zeros(3, requires_grad=True), {})  # noqa: E731 - detection loss not under test
    loss_fn = DetectionDistillationLoss(base, teacher, 1.0, mode="both", taps=taps, adapters=_Narrow())
    student.train()
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loss, items = loss_fn(student(img), {"img": img})
    assert set(items) == {"kd_loss", "fd_loss"} and float(items["fd_loss"]) > 0
    loss.sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in adapters.parameters())
    assert not teacher.training
    for tap in taps:
        tap.remove()


def test_feature_loss_is_zero_when_student_equals_teacher(offline_ultralytics: Path) -> None:
    from modprune.integrations.ultralytics import feature_distill as fd
    from modprune.integrations.ultralytics.trainer import DetectionDistillationLoss

    teacher = _models().eval()
    student = copy.deepcopy(teacher).eval()
    adapters = fd.FeatureAdapters(fd.probe_widths(student), fd.probe_widths(teacher))
    assert all(isinstance(m, torch.nn.Identity) for m in adapters.maps)
    taps = fd.FeatureTap(student), fd.FeatureTap(teacher)
    base = lambda preds, batch: (torch.zeros(3), {})  # noqa: E731
    loss_fn = DetectionDistillationLoss(base, teacher, 1.0, mode="feature", taps=taps, adapters=adapters)
    img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, items = loss_fn(student(img), {"img": img})
    assert float(items["fd_loss"]) == pytest.approx(0.0, abs=1e-6) and "kd_loss" not in items


def test_finetune_options_check_distill_mode(tmp_path: Path) -> None:
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

    with pytest.raises(ConfigError, match="distill"):
        FinetuneOptions(epochs=1, imgsz=64, project_dir=tmp_path, distill="features")
    with pytest.raises(ConfigError, match="feature_weight"):
        FinetuneOptions(epochs=1, imgsz=64, project_dir=tmp_path, distill="both", feature_weight=0)


@pytest.mark.slow  # one real training epoch with a pruned student (~20-40 s on a busy 2-core machine)
def test_one_training_run_with_feature_distillation(offline_ultralytics: Path, tiny_data: Path,
                                                   tmp_path: Path) -> None:
    import modprune
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.integrations.ultralytics.feature_distill import probe_widths

    teacher = _models()
    teacher_state = copy.deepcopy(teacher.state_dict())
    student = copy.deepcopy(teacher)
    modprune.prune(student, modprune.PruneConfig(method="structured", target=0.4, target_kind="macs",
                                                 importance="l2"), torch.zeros(1, 3, 64, 64))
    assert probe_widths(student) != probe_widths(teacher)  # the adapters are needed
    options = FinetuneOptions(epochs=1, imgsz=64, batch=4, project_dir=tmp_path, distill="both",
                              overrides={"warmup_epochs": 0, "nbs": 4})
    out = finetune(student, tiny_data, options, teacher=teacher)
    with open(tmp_path / "finetune" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["train/fd_loss"]) > 0 and float(rows[-1]["train/kd_loss"]) > 0
    now = teacher.state_dict()
    assert all(torch.equal(v, now[k].cpu()) for k, v in teacher_state.items())
    assert not out.model[-1]._forward_pre_hooks and not teacher.model[-1]._forward_pre_hooks
    assert probe_widths(out) == probe_widths(student)
    assert any(not torch.equal(a, b) for a, b in zip(out.state_dict().values(), student.state_dict().values()))
