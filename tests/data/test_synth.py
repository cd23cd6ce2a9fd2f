"""Synthetic dataset generator and YOLO dataset checks (fast, CPU, no ultralytics)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from modprune.data import check_dataset, generate_dataset
from modprune.exceptions import ConfigError, DatasetError, OutputPathError

TINY = {"n_train": 4, "n_val": 2, "imgsz": 64}


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every image and label file under ``root`` (relative path -> digest)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in {".png", ".jpg", ".txt"}}


def _rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("tiny") / "ds", seed=3, **TINY)


def test_layout_and_yaml(tiny: Path) -> None:
    root = tiny.parent
    data = yaml.safe_load(tiny.read_text())
    assert data == {"path": str(root), "train": "images/train", "val": "images/val", "nc": 1, "names": {0: "sheep"}}
    for split, n in (("train", 4), ("val", 2)):
        images = sorted((root / "images" / split).iterdir())
        labels = sorted((root / "labels" / split).iterdir())
        assert [p.stem for p in images] == [p.stem for p in labels] == [f"{i:06d}" for i in range(n)]
        for p in images:
            with Image.open(p) as im:
                assert im.size == (64, 64) and im.mode == "RGB"


def test_labels_are_valid_and_boxes_inside_image(tiny: Path) -> None:
    summary = check_dataset(tiny)
    assert summary.images == {"train": 4, "val": 2}
    assert summary.nc == 1 and summary.names == ("sheep",)
    assert summary.objects["train"] > 0
    for lbl in (tiny.parent / "labels").rglob("*.txt"):
        for cls, cx, cy, w, h in _rows(lbl):
            assert cls == 0
            assert 0 < w <= 1 and 0 < h <= 1
            assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
            assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", seed=11, **TINY)
    b = generate_dataset(tmp_path / "b", seed=11, **TINY)
    assert _digests(a.parent) == _digests(b.parent)
    ya, yb = yaml.safe_load(a.read_text()), yaml.safe_load(b.read_text())
    ya.pop("path"), yb.pop("path")
    assert ya == yb


def test_different_seed_differs_and_prefix_is_stable(tmp_path: Path) -> None:
    a = _digests(generate_dataset(tmp_path / "a", seed=1, **TINY).parent)
    b = _digests(generate_dataset(tmp_path / "b", seed=2, **TINY).parent)
    assert a["images/train/000000.png"] != b["images/train/000000.png"]
    more = _digests(generate_dataset(tmp_path / "c", seed=1, n_train=6, n_val=2, imgsz=64).parent)
    assert all(more[k] == v for k, v in a.items())  # growing n_train keeps the earlier images


def test_objects_are_small_and_numerous_at_default_size(tmp_path: Path) -> None:
    y = generate_dataset(tmp_path / "d", n_train=24, n_val=1, seed=0)
    rows = [r for p in (y.parent / "labels" / "train").glob("*.txt") for r in _rows(p)]
    longest = np.array([max(w, h) * 160 for _, _, _, w, h in rows])
    assert len(rows) >= 24 * 5  # many objects per image on average
    assert longest.min() >= 2 and longest.max() <= 40
    assert np.median(longest) < 25  # mostly small objects


def test_jpg_and_multiclass(tmp_path: Path) -> None:
    y = generate_dataset(tmp_path / "m", n_classes=3, image_format="jpg", seed=5, n_train=6, n_val=2, imgsz=96)
    data = yaml.safe_load(y.read_text())
    assert data["nc"] == 3 and data["names"] == {0: "sheep", 1: "black_sheep", 2: "lamb"}
    assert len(list((y.parent / "images" / "train").glob("*.jpg"))) == 6
    classes = {int(r[0]) for p in (y.parent / "labels").rglob("*.txt") for r in _rows(p)}
    assert classes <= {0, 1, 2} and len(classes) >= 2
    assert check_dataset(y).nc == 3


def test_custom_names(tmp_path: Path) -> None:
    y = generate_dataset(tmp_path / "n", n_classes=2, names=["ewe", "ram"], **TINY)
    assert yaml.safe_load(y.read_text())["names"] == {0: "ewe", 1: "ram"}


def test_refuses_existing_dataset_unless_overwrite(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "o", seed=0, **TINY)
    with pytest.raises(OutputPathError, match="overwrite"):
        generate_dataset(tmp_path / "o", seed=0, **TINY)
    (tmp_path / "o" / "images" / "train" / "stale.png").write_bytes(b"x")
    (tmp_path / "o" / "keep.txt").write_text("user file")
    generate_dataset(tmp_path / "o", seed=0, overwrite=True, **TINY)
    assert not (tmp_path / "o" / "images" / "train" / "stale.png").exists()
    assert (tmp_path / "o" / "keep.txt").read_text() == "user file"  # only our own folders are cleared


def test_out_dir_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputPathError):
        generate_dataset(f, **TINY)


@pytest.mark.parametrize("kwargs", [
    {"n_train": 0}, {"n_val": -1}, {"n_train": 2.5}, {"n_train": True}, {"imgsz": 16}, {"imgsz": "160"},
    {"seed": -1}, {"n_classes": 0}, {"n_classes": 65}, {"names": ["a", "b"]}, {"names": "sheep"},
    {"objects_per_image": (5, 2)}, {"objects_per_image": (0, 0)}, {"objects_per_image": 3},
    {"object_size": (1, 10)}, {"object_size": (10, 500)}, {"distractors_per_image": (-1, 2)},
    {"empty_fraction": 1.0}, {"empty_fraction": -0.1}, {"image_format": "gif"},
])
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict) -> None:
    args = {**TINY, **kwargs}
    with pytest.raises(ConfigError) as info:
        generate_dataset(tmp_path / "bad", **args)
    assert str(next(iter(kwargs))) in str(info.value)
    assert not (tmp_path / "bad").exists()  # validated before anything is written


# ------------------------------------------------------------------------------------------------ check_dataset


@pytest.fixture()
def copy_ds(tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset whose yaml has no 'path' (root = the yaml's folder)."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny.parent, root)
    data = yaml.safe_load((root / "data.yaml").read_text())
    del data["path"]
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_check_dataset_without_path_uses_yaml_folder(copy_ds: Path) -> None:
    assert check_dataset(copy_ds).images == {"train": 4, "val": 2}


def test_relative_path_is_relative_to_working_directory(copy_ds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load(copy_ds.read_text())
    data["path"] = "copy"
    copy_ds.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(copy_ds.parent.parent)
    assert check_dataset(copy_ds).images["train"] == 4
    monkeypatch.chdir(copy_ds.parent)  # 'copy' does not exist from here, even though the yaml is there
    with pytest.raises(DatasetError, match="working directory"):
        check_dataset(copy_ds)


def test_missing_yaml(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text, match", [
    ("[1, 2", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
    ("train: images/train\nval: images/val\n", "names"),
    ("train: images/train\nval: images/val\nnc: 2\nnames: [sheep]\n", "nc=2"),
    ("train: images/train\nnames: [sheep]\n", "'val'"),
    ("path: /nowhere/at/all\ntrain: images/train\nval: images/val\nnames: [sheep]\n", "not a directory"),
    ("train: images/missing\nval: images/val\nnames: [sheep]\n", "do not exist"),
])
def test_bad_yaml(copy_ds: Path, text: str, match: str) -> None:
    copy_ds.write_text(text)
    with pytest.raises(DatasetError, match=match):
        check_dataset(copy_ds)


def test_empty_split(copy_ds: Path) -> None:
    for p in (copy_ds.parent / "images" / "val").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="no images"):
        check_dataset(copy_ds)


def test_no_objects_in_train(copy_ds: Path) -> None:
    for p in (copy_ds.parent / "labels" / "train").iterdir():
        p.write_text("")
    with pytest.raises(DatasetError, match="no labelled object"):
        check_dataset(copy_ds)


@pytest.mark.parametrize("row, match", [
    ("1 0.5 0.5 0.1 0.1", "class id 1 out of range"),
    ("-1 0.5 0.5 0.1 0.1", "out of range"),
    ("0.5 0.5 0.5 0.1 0.1", "out of range"),
    ("0 0.5 0.5 0.1", "expected 5 fields"),
    ("0 0.5 0.5 0.1 0.1 0.3", "expected 5 fields"),
    ("0 a 0.5 0.1 0.1", "non-numeric"),
    ("0 nan 0.5 0.1 0.1", "non-finite"),
    ("0 1.5 0.5 0.1 0.1", "not normalised"),
    ("0 0.5 0.5 0 0.1", "not normalised"),
])
def test_malformed_label_rows(copy_ds: Path, row: str, match: str) -> None:
    lbl = copy_ds.parent / "labels" / "val" / "000001.txt"
    lbl.write_text(lbl.read_text() + row + "\n")
    with pytest.raises(DatasetError, match=match) as info:
        check_dataset(copy_ds)
    assert "000001.txt:" in str(info.value)  # names the file and line


def test_image_list_txt(copy_ds: Path) -> None:
    root = copy_ds.parent
    lst = root / "val.txt"
    lst.write_text("\n".join(f"images/val/{p.name}" for p in sorted((root / "images" / "val").iterdir())))
    data = yaml.safe_load(copy_ds.read_text())
    data["val"] = "val.txt"
    copy_ds.write_text(yaml.safe_dump(data))
    assert check_dataset(copy_ds).images["val"] == 2


def test_import_does_not_pull_heavy_dependencies() -> None:
    code = ("import sys, modprune, modprune.data, modprune.evaluate, modprune.measure.latency\n"
            "import modprune.integrations.ultralytics.offline, modprune.integrations.ultralytics.validate\n"
            "print(sorted(m for m in ('ultralytics', 'onnx', 'onnxruntime', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
