"""Saving and loading pruned models: exact round trips, ultralytics checkpoints, YOLO(path).val()."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import modprune

from ._support import example, main_output

pytestmark = pytest.mark.usefixtures("offline_ultralytics")


def _pruned(build, pm, name: str = "yolov8n") -> nn.Module:
    model = build(name)
    modprune.prune(model, modprune.PruneConfig(method="structured", target=0.5), example(), pm=pm)
    return model


@pytest.mark.parametrize("name", ["yolov8n", "resnet18"])
def test_save_load_round_trip_is_exact(name: str, build, pm, tmp_path: Path) -> None:
    model = _pruned(build, pm, name)
    path = modprune.save(model, tmp_path / "pruned.pt", metadata={"note": "test"}, pm=pm)
    # torchvision's classes are not on modprune's allowlist (no torchvision plugin): trust our own file
    loaded = modprune.load(path, pm=pm, trust_pickle=name == "resnet18")
    assert type(loaded) is type(model)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = example(96, batch=2)
    torch.testing.assert_close(main_output(loaded, x), main_output(model, x), atol=0, rtol=0)
    assert {n: p.shape for n, p in loaded.named_parameters()} == {n: p.shape for n, p in model.named_parameters()}


def test_pruned_ultralytics_model_is_saved_as_an_ultralytics_checkpoint(build, pm, tmp_path: Path) -> None:
    model = _pruned(build, pm)
    path = modprune.save(model, tmp_path / "pruned.pt", metadata={"recipe": "test"}, pm=pm)
    ckpt = modprune.serialization.load_file(path, pm=pm)  # weights-only: no trust_pickle needed
    assert {"model", "train_args", "date", "version", "modprune"} <= set(ckpt)
    assert ckpt["modprune"]["recipe"] == "test" and "modprune_version" in ckpt["modprune"]
    assert "modprune_format" not in ckpt
    assert type(ckpt["model"]).__name__ == "DetectionModel"


def test_ultralytics_style_checkpoint_loads_without_trust_pickle(build, pm, tmp_path: Path) -> None:
    """A checkpoint shaped like ultralytics' own (half-precision model, namespaces, train args)."""
    from ultralytics import __version__
    from ultralytics.utils import IterableSimpleNamespace

    model = build("yolov8n")
    ckpt = {
        "date": datetime.datetime.now().isoformat(),
        "version": __version__,
        "epoch": 3,
        "best_fitness": 0.5,
        "model": None,
        "ema": model.half(),
        "updates": 10,
        "optimizer": None,
        "train_args": {"imgsz": 64, "data": "coco8.yaml"},
        "train_metrics": {"metrics/mAP50(B)": 0.1},
        "extra": IterableSimpleNamespace(a=1),
    }
    torch.save(ckpt, tmp_path / "best.pt")
    loaded = modprune.load(tmp_path / "best.pt", pm=pm)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert loaded.args["imgsz"] == 64
    x = example()
    reference = main_output(model.float(), x)
    torch.testing.assert_close(main_output(loaded, x), reference, atol=0, rtol=0)


def test_model_yaml_loads(pm, offline_ultralytics: Path, tmp_path: Path) -> None:
    import ultralytics

    source = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    path = tmp_path / "yolov8n.yaml"
    shutil.copy(source, path)
    model = modprune.load(path, pm=pm)
    assert type(model).__name__ == "DetectionModel" and not model.training
    assert main_output(model, example()).shape == (1, 84, 84)


def _tiny_dataset(root: Path, images: int = 4, size: int = 64) -> Path:
    """A few random images with one or two bright boxes each, in YOLO layout, one class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(images):
            img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            rows = []
            for _ in range(2):
                w, h = rng.integers(10, 24, 2)
                x0, y0 = rng.integers(0, size - 24, 2)
                img[y0:y0 + h, x0:x0 + w] = 220
                rows.append(f"0 {(x0 + w / 2) / size:.4f} {(y0 + h / 2) / size:.4f} {w / size:.4f} {h / size:.4f}")
            Image.fromarray(img).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(rows) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: box\n")
    return data


def test_yolo_loads_the_checkpoint_and_validates(build, pm, tmp_path: Path) -> None:
    from ultralytics import YOLO

    model = _pruned(build, pm)
    params = sum(p.numel() for p in model.parameters())
    path = modprune.save(model, tmp_path / "pruned.pt", pm=pm)
    data = _tiny_dataset(tmp_path / "data")
    yolo = YOLO(str(path))
    assert sum(p.numel() for p in yolo.model.parameters()) == params
    metrics = yolo.val(data=str(data), imgsz=64, batch=4, device="cpu", workers=0, plots=False, verbose=False,
                       project=str(tmp_path / "runs"), name="val")
    assert "metrics/mAP50(B)" in metrics.results_dict


def test_safe_globals_cover_ultralytics_and_split_blocks(pm) -> None:
    from ultralytics.nn.modules import C2f, Detect
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.blocks import SPLIT_BLOCKS

    allowed = set(pm.safe_globals)
    assert {DetectionModel, C2f, Detect, *SPLIT_BLOCKS} <= allowed


def test_checkpoint_written_by_ultralytics_training_loads_without_trust_pickle(pm, tmp_path: Path) -> None:
    """A real checkpoint (one training epoch on 4 tiny images, ~4 s) needs only allowlisted classes."""
    from ultralytics import YOLO

    data = _tiny_dataset(tmp_path / "data")
    YOLO("yolov8n.yaml").train(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                               amp=False, verbose=False, project=str(tmp_path / "runs"), name="train")
    last = tmp_path / "runs" / "train" / "weights" / "last.pt"
    model = modprune.load(last, pm=pm)
    assert type(model).__name__ == "DetectionModel"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    report = modprune.prune(model, modprune.PruneConfig(method="structured", target=0.3), example(), pm=pm)
    assert abs(report.achieved - 0.3) <= 0.01
