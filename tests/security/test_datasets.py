"""A dataset folder is untrusted input: ultralytics' label caches in it are never unpickled, and
validation / fine-tuning write nothing into it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modprune
from modprune.data import generate_dataset

pytest.importorskip("ultralytics")

SRC = Path(modprune.__file__).resolve().parents[1]
CLI = "import sys; from modprune.cli import main; sys.exit(main())"


class _Payload:
    """Unpickling this writes a marker file: the stand-in for a stranger's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _plant_caches(root: Path, marker: Path) -> list[Path]:
    caches = []
    for split in ("train", "val"):
        path = root / "labels" / f"{split}.cache"
        with open(path, "wb") as f:
            np.save(f, np.array(_Payload(marker), dtype=object), allow_pickle=True)
        caches.append(path)
    return caches


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture()
def trapped_dataset(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    data = generate_dataset(tmp_path / "ds", n_train=4, n_val=4, imgsz=64, seed=1)
    marker = tmp_path / "marker"
    caches = _plant_caches(data.parent, marker)
    return data, marker, caches


def test_the_planted_cache_would_run_code_in_ultralytics_own_loader(trapped_dataset) -> None:
    """The trap is real: ultralytics' own cache loader runs the payload (so the tests below can fail)."""
    from ultralytics.data.utils import load_dataset_cache_file

    data, marker, caches = trapped_dataset
    load_dataset_cache_file(caches[0])
    assert marker.exists()


def _yolo_model_file(tmp_path: Path) -> Path:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    return modprune.save(model, tmp_path / "model.pt")


@pytest.mark.slow
def test_compare_with_validation_neither_unpickles_nor_writes_the_dataset(trapped_dataset, tmp_path: Path) -> None:
    data, marker, _ = trapped_dataset
    model = _yolo_model_file(tmp_path)
    before = _listing(data.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "MODPRUNE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "-q", "compare", str(model), "--data", str(data), "--imgsz", "64",
         "--no-onnx", "--rounds", "3", "--threads", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists(), "a pickle from the dataset folder was loaded"
    assert _listing(data.parent) == before, "the dataset folder was modified"


@pytest.mark.slow
def test_validate_and_finetune_in_process_leave_the_dataset_alone(trapped_dataset, tmp_path: Path) -> None:
    from ultralytics.data import dataset as ul_dataset
    from ultralytics.data import utils as ul_utils
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.offline import ensure_offline
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.integrations.ultralytics.validate import validate

    ensure_offline(tmp_path / "ul_cfg")
    data, marker, _ = trapped_dataset
    before = _listing(data.parent)
    originals = (ul_utils.load_dataset_cache_file, ul_dataset.load_dataset_cache_file)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    metrics = validate(model, data, imgsz=64, batch=4)
    assert 0.0 <= metrics["mAP50"] <= 1.0
    tuned = finetune(model, data, FinetuneOptions(epochs=1, imgsz=64, batch=2, project_dir=tmp_path / "runs"))
    assert sum(p.numel() for p in tuned.parameters()) == sum(p.numel() for p in model.parameters())
    assert not marker.exists(), "a pickle from the dataset folder was loaded"
    assert _listing(data.parent) == before, "the dataset folder was modified"
    assert (ul_utils.load_dataset_cache_file, ul_dataset.load_dataset_cache_file) == originals  # restored
