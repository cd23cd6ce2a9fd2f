"""Fixtures for the evaluation and ultralytics integration tests: a tiny synthetic dataset, offline setup."""

from __future__ import annotations

from pathlib import Path

import pytest

from modprune.data import generate_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train / 8 val images at imgsz 64, one class (sheep)."""
    return generate_dataset(tmp_path_factory.mktemp("tiny_sheep") / "ds", n_train=8, n_val=8, imgsz=64, seed=0)


@pytest.fixture(scope="session")
def offline_ultralytics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ultralytics prepared for offline use with a private config dir; skips when it is not installed."""
    pytest.importorskip("ultralytics")
    from modprune.integrations.ultralytics.offline import ensure_offline

    return ensure_offline(tmp_path_factory.mktemp("ultralytics_cfg"))


@pytest.fixture()
def yolov8n(offline_ultralytics: Path):
    """A fresh yolov8n DetectionModel with one class (built from the bundled yaml, no download)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolov8n.yaml", nc=1, verbose=False)
