"""ultralytics' validator, trainer and predictor run the plugin's model (offline, tiny synthetic data)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import ultralytics.utils.checks
from PIL import Image
from ultralytics import YOLO

from modprune_tokenc3_lsnet import activate
from modprune_tokenc3_lsnet.blocks import TokenC3

from .conftest import place_font

IMGSZ = 64


def _write_dataset(root: Path, count: int = 4) -> Path:
    """Write ``count`` 64x64 images with one bright box each, YOLO labels, and a data yaml."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            img = rng.integers(0, 60, (IMGSZ, IMGSZ, 3), dtype=np.uint8)
            x0, y0 = rng.integers(4, 36, 2)
            w, h = rng.integers(12, 24, 2)
            img[y0 : y0 + h, x0 : x0 + w] = 230
            Image.fromarray(img).save(root / "images" / split / f"{i}.jpg")
            cx, cy = (x0 + w / 2) / IMGSZ, (y0 + h / 2) / IMGSZ
            (root / "labels" / split / f"{i}.txt").write_text(f"0 {cx:.6f} {cy:.6f} {w / IMGSZ:.6f} {h / IMGSZ:.6f}\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: sheep\n")
    return data


@pytest.fixture
def offline_font(tmp_path, monkeypatch):
    """Make sure ultralytics finds Arial.ttf locally, whatever config dir it was imported with."""
    if not (ultralytics.utils.checks.USER_CONFIG_DIR / "Arial.ttf").exists():
        monkeypatch.setattr(ultralytics.utils.checks, "USER_CONFIG_DIR", place_font(tmp_path / "cfg").parent)


@pytest.fixture
def no_network(monkeypatch):
    """Record and refuse every socket connection attempt."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


COMMON = dict(imgsz=IMGSZ, batch=2, workers=0, device="cpu", plots=False, verbose=False)


def test_validate_train_and_predict(tmp_path, offline_font, no_network):
    data = _write_dataset(tmp_path / "data")
    activate()
    model = YOLO("yolov13n_lsnet_p2_simple.yaml")

    metrics = model.val(data=str(data), project=str(tmp_path / "runs"), name="val", **COMMON)
    assert 0.0 <= metrics.box.map50 <= 1.0

    model.train(
        data=str(data),
        epochs=1,
        project=str(tmp_path / "runs"),
        name="train",
        amp=False,
        warmup_epochs=0,
        mosaic=0.0,
        **COMMON,
    )
    trainer = model.trainer
    losses = trainer.tloss.values() if isinstance(trainer.tloss, dict) else [trainer.tloss]
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in losses)
    assert sum(p.numel() for p in trainer.model.parameters()) == 4_719_701
    assert Path(trainer.best).is_file()

    reloaded = YOLO(str(trainer.best))
    assert any(isinstance(m, TokenC3) for m in reloaded.model.modules())
    results = reloaded.predict(str(tmp_path / "data" / "images" / "val" / "0.jpg"), imgsz=IMGSZ, device="cpu", verbose=False)
    assert len(results) == 1 and results[0].boxes is not None
    assert no_network == []
