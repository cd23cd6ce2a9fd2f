"""The proxy's BatchNorm recalibration: scores a recalibrated copy, never the model it was given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import modprune
from modprune.data import generate_dataset

pytest.importorskip("ultralytics")


def _running_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


def test_calibrated_proxy_scores_a_recalibrated_copy(tmp_path: Path) -> None:
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline(tmp_path / "ucfg")
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.proxy import ProxyScorer

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    modprune.prune(model, modprune.PruneConfig(method="structured", target=0.4, importance="l1"),
                   torch.zeros(1, 3, 64, 64))
    data = generate_dataset(tmp_path / "ds", n_train=4, n_val=2, imgsz=64, seed=0)
    before = _running_stats(model)
    with ProxyScorer(data, imgsz=64, subset=2, batch=2) as plain, \
            ProxyScorer(data, imgsz=64, subset=2, batch=2, calibrate_batches=2) as calibrated:
        assert len(calibrated.calibration_images) == 4 and not plain.calibration_images
        as_is, recalibrated = plain(model), calibrated(model)
    assert all(torch.equal(a, b) for a, b in zip(before, _running_stats(model)))  # the model was not touched
    assert recalibrated["val_loss"] != pytest.approx(as_is["val_loss"], rel=1e-6)
    with pytest.raises(modprune.ConfigError, match="calibrate_batches"):
        ProxyScorer(data, imgsz=64, calibrate_batches=-1)
