"""``modprune prune --calibrate DIR``: BatchNorm statistics re-estimated on a folder of images."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import modprune

from typing import Any

Runner = Any  # the run_cli fixture (tests/cli/conftest.py)


def _workdir(tmp_path: Path) -> Path:
    from PIL import Image

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                          nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3))
    model.eval()
    modprune.save(model, tmp_path / "model.pt")
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 24), (200, 10 * i, 60)).save(tmp_path / "images" / f"{i}.jpg")
    (tmp_path / "empty").mkdir()
    # structured-30 without its round_to 16 (units of half a layer in this 32-channel model)
    (tmp_path / "s30.yaml").write_text("name: s30\nconfig:\n  method: structured\n  target: 0.3\n  target_kind: macs\n")
    return tmp_path


def test_prune_calibrate_sets_statistics(run_cli: Runner, tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    common = ("prune", "model.pt", "--recipe", "s30.yaml", "--imgsz", "32")
    plain = run_cli(*common, "-o", "plain.pt", cwd=work)
    assert plain.rc == 0, plain.stderr
    result = run_cli(*common, "-o", "out.pt", "--calibrate", "images", cwd=work)
    assert result.rc == 0, result.stderr
    calibrated, uncalibrated = modprune.load(work / "out.pt"), modprune.load(work / "plain.pt")
    bn = calibrated[1]
    assert int(bn.num_batches_tracked) == 1  # reset, then one batch of 3 images
    assert not torch.allclose(bn.running_mean, uncalibrated[1].running_mean)
    images = next(modprune.image_batches(work / "images", 32))
    expected = calibrated[0](images).mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)


def test_prune_calibrate_refuses_empty_folder_before_work(run_cli: Runner, tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    result = run_cli("prune", "model.pt", "--recipe", "structured-30", "--imgsz", "32", "-o", "out.pt",
                     "--calibrate", "empty", cwd=work)
    assert result.rc == 2
    assert "no image files" in result.stderr and "empty" in result.stderr
    assert not (work / "out.pt").exists()
