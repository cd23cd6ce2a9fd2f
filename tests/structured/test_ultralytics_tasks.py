"""Every ultralytics task survives ``modprune.load`` -> ``modprune.save`` -> ``YOLO(path)``, and the
yamls of models with their own model class (RT-DETR, YOLO-World, YOLOE) are built with that class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import modprune
from modprune import PruneConfig

#: bundled yaml -> (task, the attribute of a prediction result that the task fills in)
TASKS = {
    "yolov8n-seg.yaml": ("segment", "masks"),
    "yolov8n-cls.yaml": ("classify", "probs"),
    "yolov8n-pose.yaml": ("pose", "keypoints"),
    "yolov8n-obb.yaml": ("obb", "obb"),
    "yolov8n.yaml": ("detect", "boxes"),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_saved_model_predicts_its_task(name: str, tmp_path: Path, offline_ultralytics: Path) -> None:
    from ultralytics import YOLO

    task, field = TASKS[name]
    model = modprune.load(name)
    assert model.task == task
    path = modprune.save(model, tmp_path / "model.pt")
    yolo = YOLO(str(path))
    assert yolo.task == task
    image = np.full((64, 64, 3), 127, np.uint8)
    result = yolo.predict(image, imgsz=64, conf=0.0, verbose=False)[0]  # conf 0: an untrained seg model finds boxes
    assert getattr(result, field) is not None, f"{name}: no {field} in the prediction"
    for other in {"masks", "probs", "keypoints", "obb"} - {field}:
        assert getattr(result, other) is None, f"{name}: a {task} model predicted {other}"
    assert modprune.load(path).task == task  # the task survives modprune's own round trip too


def test_saved_task_follows_args_of_a_trained_model(tmp_path: Path, offline_ultralytics: Path) -> None:
    """A checkpoint trained by ultralytics carries ``args['task']``; saving keeps it."""
    model = modprune.load("yolov8n-pose.yaml")
    del model.task
    model.args = {"task": "pose", "imgsz": 64}
    path = modprune.save(model, tmp_path / "pose.pt")
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["train_args"]["task"] == "pose"


#: yaml -> the ultralytics model class it needs
OWN_CLASSES = {
    "yolov8n-rtdetr.yaml": "RTDETRDetectionModel",
    "yolov8n-worldv2.yaml": "WorldModel",
    "yoloe-v8n.yaml": "YOLOEModel",
    "yoloe-11n-seg.yaml": "YOLOESegModel",
}


@pytest.mark.parametrize("name", sorted(OWN_CLASSES))
def test_own_model_class_and_unstructured_prune(name: str, offline_ultralytics: Path) -> None:
    model = modprune.load(name)
    assert type(model).__name__ == OWN_CLASSES[name]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    report = modprune.prune(model, PruneConfig(method="unstructured", target=0.3))
    assert report.achieved == pytest.approx(0.3, abs=0.02)
    with torch.no_grad():
        after = model(x)
    assert type(after) is type(before)


def test_unknown_task_refused_in_one_line(tmp_path: Path, offline_ultralytics: Path) -> None:
    from modprune.exceptions import ModelLoadError

    with pytest.raises(ModelLoadError, match="modprune builds detect.*RT-DETR") as info:
        modprune.load("yolo26n-depth.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(OWN_CLASSES))
def test_structured_refused_up_front_in_one_line(name: str, offline_ultralytics: Path) -> None:
    from modprune.exceptions import UnsupportedModelError

    model = modprune.load(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="structured pruning of ultralytics .* not supported") as info:
        modprune.prune(model, PruneConfig(method="structured", target=0.3), torch.rand(1, 3, 64, 64))
    assert "\n" not in str(info.value) and "unstructured" in str(info.value)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(v, after[k]) for k, v in before.items())
