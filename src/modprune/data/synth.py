"""Synthetic small-object detection dataset in YOLO format: sheep seen from a drone.

It stands in for aerial pasture imagery when the real data cannot be shipped: many small objects (a few
pixels to ~30 px long) on textured field backgrounds (grass noise, soil patches, tracks), with clutter
(rocks, bushes), lighting, colour-temperature, scale (flight altitude) and blur variety.

Layout written under ``out_dir``::

    images/train/000000.png   labels/train/000000.txt   (one ``cls cx cy w h`` row per object, normalised)
    images/val/...            labels/val/...
    data.yaml                 (path, train, val, nc, names)

Determinism: every image draws from its own ``numpy.random.SeedSequence([seed, split, index])``, so the
same seed gives byte-identical files (with the same numpy and Pillow versions), and growing ``n_train``
keeps the images already generated. All drawing is numpy; Pillow only encodes the files.

Sizing: with yolov8n at ``imgsz=160`` a few hundred training images are needed before the detector
learns anything (64 images stayed near mAP50 0 after 30 CPU epochs; 256 reached ~0.8), hence the
defaults ``n_train=256, n_val=64, imgsz=160``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from modprune.exceptions import ConfigError, DatasetError, OutputPathError
from modprune.outputs import check_output, staged_outputs
from modprune.optional import require

__all__ = ["generate_dataset", "check_dataset", "dataset_images", "DatasetSummary", "IMAGE_FORMATS"]

LOG = logging.getLogger(__name__)

IMAGE_FORMATS = ("png", "jpg")
_IMG_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
_SPLITS = ("train", "val")

# Appearance presets per class: wool colour (RGB in 0..1), colour jitter, face colour, relative size, aspect.
_CLASS_PRESETS: tuple[dict[str, Any], ...] = (
    {"name": "sheep", "wool": (0.88, 0.85, 0.78), "face": (0.18, 0.15, 0.13), "size": 1.0, "aspect": 0.62},
    {"name": "black_sheep", "wool": (0.22, 0.19, 0.17), "face": (0.08, 0.07, 0.07), "size": 1.0, "aspect": 0.62},
    {"name": "lamb", "wool": (0.95, 0.94, 0.90), "face": (0.85, 0.80, 0.75), "size": 0.6, "aspect": 0.72},
)


def _class_presets(n_classes: int) -> list[dict[str, Any]]:
    """Appearance of each class: the three sheep presets, then hue-wheel coloured blobs."""
    presets = [dict(p) for p in _CLASS_PRESETS[:n_classes]]
    for k in range(len(presets), n_classes):
        hue = (k * 0.381966) % 1.0  # golden-ratio hue steps keep classes apart
        rgb = _hsv_to_rgb(hue, 0.55, 0.85)
        presets.append({"name": f"object{k}", "wool": rgb, "face": tuple(0.4 * c for c in rgb),
                        "size": 0.8 + 0.4 * ((k * 0.618) % 1.0), "aspect": 0.45 + 0.4 * ((k * 0.7548) % 1.0)})
    return presets


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    """Scalar HSV -> RGB (all in 0..1)."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


@dataclass(frozen=True)
class _Params:
    """Validated generation parameters shared by every image."""

    imgsz: int
    n_classes: int
    objects_per_image: tuple[int, int]
    object_size: tuple[float, float]
    distractors_per_image: tuple[int, int]
    empty_fraction: float
    presets: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`check_dataset` found: images, label files and objects per split."""

    root: Path
    nc: int
    names: tuple[str, ...]
    images: dict[str, int]
    objects: dict[str, int]


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def generate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    n_train: int = 256,
    n_val: int = 64,
    imgsz: int = 160,
    seed: int = 0,
    n_classes: int = 1,
    names: Sequence[str] | None = None,
    objects_per_image: tuple[int, int] = (2, 24),
    object_size: tuple[float, float] = (5.0, 30.0),
    distractors_per_image: tuple[int, int] = (2, 12),
    empty_fraction: float = 0.05,
    image_format: str = "png",
    overwrite: bool = False,
) -> Path:
    """Write a synthetic YOLO-format detection dataset and return the path of its ``data.yaml``.

    Args:
        out_dir: Dataset root; created if missing. Must be empty unless ``overwrite``.
        n_train: Number of training images (>= 1).
        n_val: Number of validation images (>= 1).
        imgsz: Square image side in pixels (32..4096).
        seed: Master seed; the same seed gives byte-identical files.
        n_classes: Number of object classes (1..64); class 0 is white sheep, 1 black sheep, 2 lambs,
            further classes are coloured blobs of distinct shape.
        names: Class names (``n_classes`` of them); default names come from the presets.
        objects_per_image: Inclusive (min, max) number of objects per non-empty image.
        object_size: (min, max) object length in pixels at ``imgsz`` (longest side of the body).
        distractors_per_image: Inclusive (min, max) number of rocks and bushes per image.
        empty_fraction: Fraction of images (0..1) that show no object at all (hard negatives).
        image_format: ``"png"`` (lossless, default) or ``"jpg"``.
        overwrite: Replace a dataset previously written in ``out_dir`` (only our own sub-folders).

    Returns:
        Path of the written ``data.yaml``.

    Raises:
        ConfigError: An argument is out of range.
        OutputPathError: ``out_dir`` holds a dataset and ``overwrite`` is False, or is not writable.
        MissingDependencyError: Pillow (the ``data`` extra) is not installed.
    """
    require("PIL", "writing a synthetic dataset (modprune data synth)")
    params = _validate_args(n_train, n_val, imgsz, seed, n_classes, names, objects_per_image, object_size,
                            distractors_per_image, empty_fraction, image_format)
    class_names = list(names) if names is not None else [p["name"] for p in params.presets]
    root = Path(out_dir).expanduser().resolve()
    _prepare_out_dir(root, overwrite)
    with staged_outputs() as stage:  # the dataset lands whole or not at all (e.g. on a full disk)
        work = stage.dir(root)
        n_objects = _write_splits(work, params, {"train": n_train, "val": n_val}, seed, image_format)
        (work / "data.yaml").write_text(_data_yaml_text(root, class_names), encoding="utf-8")
    LOG.info("synthetic dataset in %s: %d train / %d val images, %d / %d objects", root, n_train, n_val,
             n_objects["train"], n_objects["val"])
    return root / "data.yaml"


def _data_yaml_text(root: Path, class_names: Sequence[str]) -> str:
    """The dataset's ``data.yaml``: its root, the two splits and the class names."""
    content = {"path": str(root), "train": "images/train", "val": "images/val", "nc": len(class_names),
               "names": {i: n for i, n in enumerate(class_names)}}
    return yaml.safe_dump(content, sort_keys=False)


def _write_splits(work: Path, params: _Params, counts: dict[str, int], seed: int, image_format: str) -> dict[str, int]:
    """Render every split's images and label files under ``work``; return the object count per split."""
    n_objects = {}
    for split_id, split in enumerate(_SPLITS):
        img_dir, lbl_dir = work / "images" / split, work / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        n_objects[split] = 0
        for i in range(counts[split]):
            rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, i]))
            image, boxes = _render_image(rng, params)
            stem = f"{i:06d}"
            _write_image(image, img_dir / f"{stem}.{image_format}", image_format)
            (lbl_dir / f"{stem}.txt").write_text(_format_labels(boxes, params.imgsz), encoding="utf-8")
            n_objects[split] += len(boxes)
    return n_objects


def check_dataset(data_yaml: str | os.PathLike[str]) -> DatasetSummary:
    """Check a YOLO detection dataset described by ``data_yaml`` and summarise it.

    The dataset root is resolved as ultralytics does: ``path`` if absolute or relative to the working
    directory, else relative to ultralytics' ``datasets_dir`` setting (when ultralytics is loaded in this
    process), else the yaml's folder. Checks that the yaml parses and names the train and val image
    folders (or ``.txt`` image lists) and
    the class names; that both splits hold images; that every label file has rows of five numbers
    ``cls cx cy w h`` with an integer class id in ``[0, nc)``, centres in ``[0, 1]`` and positive sizes;
    and that the training labels hold at least one object.

    Raises:
        DatasetError: naming the file (and line) at fault and what to fix.
    """
    yaml_path, data = _read_data_yaml(data_yaml)
    if not isinstance(data, dict):
        raise DatasetError(f"dataset yaml {str(yaml_path)!r} must be a mapping with keys path, train, val, "
                           f"names; got {type(data).__name__}", obj=yaml_path)
    names = _parse_names(data, yaml_path)
    nc = len(names)
    root = _dataset_root(data, yaml_path)
    images: dict[str, int] = {}
    objects: dict[str, int] = {}
    for split in _SPLITS:
        if not data.get(split):
            raise DatasetError(f"dataset yaml {str(yaml_path)!r} has no {split!r} entry; add "
                               f"'{split}: images/{split}' (relative to 'path')", obj=yaml_path)
        files = _split_images(root, data[split], split, yaml_path)
        images[split] = len(files)
        objects[split] = sum(_check_label_file(_label_path(f), nc) for f in files)
    if objects["train"] == 0:
        raise DatasetError(f"the training split of {str(yaml_path)!r} has {images['train']} images but no "
                           "labelled object; add label files under labels/train", obj=yaml_path)
    return DatasetSummary(root=root, nc=nc, names=tuple(names), images=images, objects=objects)


def dataset_images(data_yaml: str | os.PathLike[str], split: str = "train") -> list[Path]:
    """The image files of one split of a YOLO dataset (sorted), resolved as :func:`check_dataset` does.

    Raises:
        DatasetError: the yaml is missing or malformed, or the split has no entry or no image.
    """
    yaml_path, data = _read_data_yaml(data_yaml)
    if not isinstance(data, dict) or not data.get(split):
        raise DatasetError(f"dataset yaml {str(yaml_path)!r} has no {split!r} entry; add "
                           f"'{split}: images/{split}' (relative to 'path')", obj=yaml_path)
    files = _split_images(_dataset_root(data, yaml_path), data[split], split, yaml_path)
    if not files:
        raise DatasetError(f"the {split!r} split of {str(yaml_path)!r} holds no image", obj=yaml_path)
    return files


def _read_data_yaml(data_yaml: str | os.PathLike[str]) -> tuple[Path, Any]:
    """(the yaml's path, its parsed content); DatasetError when it is missing or not valid YAML."""
    yaml_path = Path(data_yaml).expanduser()
    if not yaml_path.is_file():
        raise DatasetError(f"dataset yaml {str(yaml_path)!r} does not exist; pass the data.yaml of a YOLO "
                           "dataset (e.g. one written by 'modprune data synth DIR')", obj=yaml_path)
    try:
        return yaml_path, yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(f"dataset yaml {str(yaml_path)!r} is not valid YAML ({e}); fix its syntax",
                           obj=yaml_path) from e


# --------------------------------------------------------------------------------------------------
# Argument checks and file handling
# --------------------------------------------------------------------------------------------------


def _validate_args(n_train: Any, n_val: Any, imgsz: Any, seed: Any, n_classes: Any, names: Any,
                   objects_per_image: Any, object_size: Any, distractors_per_image: Any,
                   empty_fraction: Any, image_format: Any) -> _Params:
    """Check every generator argument; raise ConfigError naming the bad one."""
    _check_int("n_train", n_train, 1, 10_000_000)
    _check_int("n_val", n_val, 1, 10_000_000)
    _check_int("imgsz", imgsz, 32, 4096)
    _check_int("seed", seed, 0, 2**63 - 1)
    _check_int("n_classes", n_classes, 1, 64)
    if names is not None:
        if isinstance(names, (str, bytes)) or len(list(names)) != n_classes or not all(
                isinstance(n, str) and n.strip() for n in names):
            raise ConfigError(f"names={names!r} must be a list of {n_classes} non-empty strings (one per class)",
                              obj=names)
    lo, hi = _check_range("objects_per_image", objects_per_image, 0, 1000, integer=True)
    if hi < 1:
        raise ConfigError(f"objects_per_image={objects_per_image!r} allows no object; use e.g. (2, 24)",
                          obj=objects_per_image)
    s_lo, s_hi = _check_range("object_size", object_size, 2.0, float(imgsz) / 2)
    d_lo, d_hi = _check_range("distractors_per_image", distractors_per_image, 0, 1000, integer=True)
    if isinstance(empty_fraction, bool) or not isinstance(empty_fraction, (int, float)) or not (
            0.0 <= float(empty_fraction) < 1.0):
        raise ConfigError(f"empty_fraction={empty_fraction!r} must be a number in [0, 1)", obj=empty_fraction)
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"image_format={image_format!r} is not supported; use one of {IMAGE_FORMATS}",
                          obj=image_format)
    return _Params(imgsz=int(imgsz), n_classes=int(n_classes), objects_per_image=(int(lo), int(hi)),
                   object_size=(float(s_lo), float(s_hi)), distractors_per_image=(int(d_lo), int(d_hi)),
                   empty_fraction=float(empty_fraction), presets=tuple(_class_presets(int(n_classes))))


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    """Raise ConfigError unless ``value`` is an int in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ConfigError(f"{name}={value!r} must be an integer in [{lo}, {hi}]", obj=value)


def _check_range(name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> tuple[float, float]:
    """Raise ConfigError unless ``value`` is an ordered pair within [lo, hi]."""
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, kind) for v in value)
            or not (lo <= value[0] <= value[1] <= hi)):
        what = "integers" if integer else "numbers"
        raise ConfigError(f"{name}={value!r} must be a pair (min, max) of {what} with {lo} <= min <= max <= {hi}",
                          obj=value)
    return value[0], value[1]


def _prepare_out_dir(root: Path, overwrite: bool) -> None:
    """Refuse a non-directory, or a dataset already written in ``root`` unless ``overwrite`` (it is then
    replaced only once the new one is complete); check that ``root`` can be written."""
    if root.exists() and not root.is_dir():
        raise OutputPathError(f"output {str(root)!r} exists and is not a directory; choose another path", obj=root)
    ours = [root / "images", root / "labels", root / "data.yaml"]
    present = [p for p in ours if p.exists()]
    if present and not overwrite:
        raise OutputPathError(f"{str(root)!r} already holds a dataset ({present[0].name}); pass overwrite=True "
                              "(CLI: --overwrite) or choose an empty directory", obj=root)
    check_output(root, directory=True)


def _write_image(image: np.ndarray, path: Path, image_format: str) -> None:
    """Encode an HxWx3 uint8 array with Pillow (deterministic settings)."""
    from PIL import Image

    im = Image.fromarray(image)
    if image_format == "png":
        im.save(path, format="PNG", compress_level=1)
    else:
        im.save(path, format="JPEG", quality=92, subsampling=0)


def _format_labels(boxes: list[tuple[int, float, float, float, float]], imgsz: int) -> str:
    """YOLO label rows ``cls cx cy w h`` (normalised, 6 decimals) from pixel boxes ``(cls, x0, y0, x1, y1)``."""
    rows = []
    for cls, x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2 / imgsz, (y0 + y1) / 2 / imgsz
        w, h = (x1 - x0) / imgsz, (y1 - y0) / imgsz
        rows.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(rows)


# --------------------------------------------------------------------------------------------------
# Rendering (numpy only)
# --------------------------------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [0, 1] with feature size ``cell`` pixels (bilinear, smoothstep-eased)."""
    cell = max(float(cell), 1.0)
    gh, gw = int(h / cell) + 3, int(w / cell) + 3  # +1 for the random sub-cell offset
    grid = rng.random((gh, gw), dtype=np.float32)
    ys = np.arange(h, dtype=np.float32) / cell + rng.random(dtype=np.float32)
    xs = np.arange(w, dtype=np.float32) / cell + rng.random(dtype=np.float32)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = ys - y0, xs - x0
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    y0 = np.minimum(y0, gh - 2)
    x0 = np.minimum(x0, gw - 2)
    rows = grid[:, x0] * (1 - fx) + grid[:, x0 + 1] * fx  # separable: along x on the coarse rows first
    return rows[y0] * (1 - fy)[:, None] + rows[y0 + 1] * fy[:, None]


def _fractal_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int) -> np.ndarray:
    """Sum of value-noise octaves (halving cell size and amplitude), normalised to [0, 1]."""
    out = np.zeros((h, w), dtype=np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * _value_noise(rng, h, w, cell)
        total += amp
        amp *= 0.5
        cell /= 2.0
    return out / total


def _render_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Pasture: grass colour field with texture, soil patches and an occasional track. HxWx3 float32."""
    grass_hue = np.array([0.28, 0.42, 0.16], dtype=np.float32) * rng.uniform(0.75, 1.2)
    grass_hue += rng.normal(0, 0.03, 3).astype(np.float32)  # dry / lush variation
    dry = rng.uniform(0.0, 0.5)
    grass_hue = grass_hue * (1 - dry) + np.array([0.50, 0.47, 0.25], dtype=np.float32) * dry
    low = _fractal_noise(rng, s, s, s / 2.5, 3)
    fine = _value_noise(rng, s, s, rng.uniform(1.2, 2.5))
    streak = _value_noise(rng, s, s, rng.uniform(2.0, 4.0))
    shade = 0.75 + 0.35 * low + 0.18 * (fine - 0.5) + 0.10 * (streak - 0.5)
    img = grass_hue[None, None, :] * shade[..., None]
    # Soil / mud patches from thresholded low-frequency noise.
    if rng.random() < 0.7:
        patch = _fractal_noise(rng, s, s, s / rng.uniform(2.0, 5.0), 3)
        thr = rng.uniform(0.58, 0.72)
        a = np.clip((patch - thr) * 12.0, 0.0, 1.0)[..., None]
        soil = np.array([0.42, 0.32, 0.22], dtype=np.float32) * rng.uniform(0.7, 1.15)
        img = img * (1 - a) + soil * (0.85 + 0.3 * fine[..., None]) * a
    # Tracks: a curved band of bare earth.
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.6 else 0):
        img = _draw_track(rng, img, s)
    return img


def _draw_track(rng: np.random.Generator, img: np.ndarray, s: int) -> np.ndarray:
    """Blend a wavy band of lighter earth across the image."""
    theta = rng.uniform(0, math.pi)
    c, sn = math.cos(theta), math.sin(theta)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    u = (xx - s / 2) * c + (yy - s / 2) * sn
    v = -(xx - s / 2) * sn + (yy - s / 2) * c
    v = v - rng.uniform(-0.35, 0.35) * s - rng.uniform(0, 0.08 * s) * np.sin(u / rng.uniform(8, 30) + rng.uniform(0, 6))
    half = rng.uniform(1.0, 4.5)
    a = np.clip(half + 0.8 - np.abs(v), 0.0, 1.0)[..., None] * rng.uniform(0.6, 0.95)
    earth = np.array([0.60, 0.52, 0.40], dtype=np.float32) * rng.uniform(0.75, 1.1)
    return img * (1 - a) + earth * a


def _local_grid(cx: float, cy: float, r: float, s: int) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    """Window around (cx, cy) of radius ``r`` clipped to the image, with pixel-centre offsets dx, dy."""
    x0, x1 = max(int(math.floor(cx - r)), 0), min(int(math.ceil(cx + r)) + 1, s)
    y0, y1 = max(int(math.floor(cy - r)), 0), min(int(math.ceil(cy + r)) + 1, s)
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return slice(y0, y1), slice(x0, x1), xx + 0.5 - cx, yy + 0.5 - cy


def _ellipse_alpha(dx: np.ndarray, dy: np.ndarray, a: float, b: float, theta: float,
                   wobble: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased ellipse coverage (semi-axes a, b, rotation theta); also returns body coords u, v."""
    c, s = math.cos(theta), math.sin(theta)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    if wobble is not None:
        r = r * wobble
    alpha = np.clip((1.0 - r) * min(a, b) + 0.5, 0.0, 1.0)
    return alpha, u, v


def _draw_shadow(img: np.ndarray, cx: float, cy: float, a: float, b: float, theta: float,
                 light: tuple[float, float], strength: float) -> None:
    """Darken the ground under an object, offset away from the light."""
    ox, oy = -light[0] * b * 0.45, -light[1] * b * 0.45
    win = _local_grid(cx + ox, cy + oy, a * 1.3 + 2, img.shape[0])
    if win is None:
        return
    ys, xs, dx, dy = win
    alpha, _, _ = _ellipse_alpha(dx, dy, a * 1.08, b * 1.15, theta)
    img[ys, xs] *= (1.0 - strength * alpha)[..., None]


def _draw_sheep(rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, length: float,
                preset: dict[str, Any], light: tuple[float, float], wool_tex: np.ndarray
                ) -> tuple[float, float, float, float] | None:
    """Draw one sheep-like object (woolly ellipse + head) and return its tight box (x0, y0, x1, y1)."""
    s = img.shape[0]
    aspect = preset["aspect"] * rng.uniform(0.85, 1.15)
    a = length / 2 * 0.8  # body semi-axis; the head adds the rest of the length
    b = max(a * aspect, 1.0)
    theta = rng.uniform(0, 2 * math.pi)
    _draw_shadow(img, cx, cy, a, b, theta, light, rng.uniform(0.25, 0.45))
    win = _local_grid(cx, cy, a * 1.45 + 1.5, s)
    if win is None:
        return None
    ys, xs, dx, dy = win
    tex = wool_tex[ys, xs]
    body, u, v = _ellipse_alpha(dx, dy, a, b, theta, wobble=1.0 + 0.06 * (tex - 0.5))
    head_u = a * 1.02
    hdx, hdy = dx - head_u * math.cos(theta), dy - head_u * math.sin(theta)
    head, _, _ = _ellipse_alpha(hdx, hdy, max(a * 0.34, 0.8), max(b * 0.45, 0.7), theta)
    wool = np.array(preset["wool"], dtype=np.float32) * rng.uniform(0.85, 1.08)
    wool = np.clip(wool + rng.normal(0, 0.025, 3).astype(np.float32), 0, 1)
    face = np.array(preset["face"], dtype=np.float32) * rng.uniform(0.8, 1.2)
    rr = (u / a) ** 2 + (v / b) ** 2
    lit = 1.0 + 0.18 * (dx * light[0] + dy * light[1]) / a - 0.22 * np.clip(rr, 0, 1)
    body_col = wool[None, None, :] * (lit * (0.88 + 0.24 * tex))[..., None]
    region = img[ys, xs]
    region = region * (1 - body[..., None]) + body_col * body[..., None]
    region = region * (1 - head[..., None]) + face * head[..., None]
    img[ys, xs] = region
    cover = np.maximum(body, head) > 0.5
    if not cover.any():
        return None
    rows, cols = np.nonzero(cover)
    return (xs.start + float(cols.min()), ys.start + float(rows.min()),
            xs.start + float(cols.max()) + 1.0, ys.start + float(rows.max()) + 1.0)


def _draw_rock(rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, size: float,
               light: tuple[float, float]) -> None:
    """Angular grey blob (a distractor with sheep-like size and, sometimes, brightness)."""
    r = size / 2
    win = _local_grid(cx, cy, r * 1.5 + 1, img.shape[0])
    if win is None:
        return
    ys, xs, dx, dy = win
    ang = np.arctan2(dy, dx)
    k = int(rng.integers(3, 7))
    wob = 1.0 + sum(rng.uniform(0.05, 0.2) * np.cos(j * ang + rng.uniform(0, 6)) for j in range(2, k))
    alpha, u, v = _ellipse_alpha(dx, dy, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi), wobble=wob)
    grey = rng.uniform(0.3, 0.72)
    col = np.array([grey, grey * 0.98, grey * 0.93], dtype=np.float32)
    facet = 1.0 + 0.25 * (dx * light[0] + dy * light[1]) / max(r, 1.0)
    region = img[ys, xs]
    img[ys, xs] = region * (1 - alpha[..., None]) + (col * facet[..., None]) * alpha[..., None]


def _draw_bush(rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, size: float,
               bush_tex: np.ndarray) -> None:
    """Dark green textured clump, larger than a sheep."""
    r = size / 2
    win = _local_grid(cx, cy, r * 1.4 + 1, img.shape[0])
    if win is None:
        return
    ys, xs, dx, dy = win
    tex = bush_tex[ys, xs]
    alpha, _, _ = _ellipse_alpha(dx, dy, r, r * rng.uniform(0.7, 1.0), rng.uniform(0, math.pi),
                                 wobble=1.0 + 0.35 * (tex - 0.5))
    col = np.array([0.12, 0.22, 0.08], dtype=np.float32) * rng.uniform(0.7, 1.3)
    region = img[ys, xs]
    img[ys, xs] = region * (1 - alpha[..., None]) + (col * (0.7 + 0.6 * tex)[..., None]) * alpha[..., None]


def _place_objects(rng: np.random.Generator, n: int, s: int, sizes: np.ndarray) -> list[tuple[float, float]]:
    """Centres for ``n`` objects in a few flocks, rejecting heavy overlap; may return fewer than ``n``."""
    n_flocks = int(rng.integers(1, 4))
    flocks = rng.uniform(0.15 * s, 0.85 * s, size=(n_flocks, 2))
    spread = rng.uniform(0.08, 0.3) * s
    placed: list[tuple[float, float, float]] = []
    for i in range(n):
        r = sizes[i] / 2
        for _ in range(12):
            if rng.random() < 0.75:
                c = flocks[int(rng.integers(0, n_flocks))] + rng.normal(0, spread, 2)
            else:
                c = rng.uniform(0, s, 2)
            x, y = float(c[0]), float(c[1])
            if not (r + 1 <= x <= s - r - 1 and r + 1 <= y <= s - r - 1):
                continue
            if all((x - px) ** 2 + (y - py) ** 2 > (0.8 * (r + pr)) ** 2 for px, py, pr in placed):
                placed.append((x, y, r))
                break
    return [(x, y) for x, y, _ in placed]


def _render_image(rng: np.random.Generator, p: _Params
                  ) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One image (HxWx3 uint8) and its boxes ``(cls, x0, y0, x1, y1)`` in pixels."""
    s = p.imgsz
    img = _render_background(rng, s)
    light_angle = rng.uniform(0, 2 * math.pi)
    light = (math.cos(light_angle), math.sin(light_angle))
    scale = s / 160.0
    bush_tex = _value_noise(rng, s, s, 1.6)
    n_dis = int(rng.integers(p.distractors_per_image[0], p.distractors_per_image[1] + 1))
    for _ in range(n_dis):
        x, y = rng.uniform(0, s, 2)
        if rng.random() < 0.6:
            _draw_rock(rng, img, float(x), float(y), float(rng.uniform(3, 14) * scale), light)
        else:
            _draw_bush(rng, img, float(x), float(y), float(rng.uniform(8, 30) * scale), bush_tex)
    boxes: list[tuple[int, float, float, float, float]] = []
    if rng.random() >= p.empty_fraction:
        n = int(rng.integers(p.objects_per_image[0], p.objects_per_image[1] + 1))
        # Altitude: one log-uniform base length per image, +-20 % per object.
        lo, hi = p.object_size
        base = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        classes = rng.integers(0, p.n_classes, size=n)
        rel = np.array([p.presets[int(c)]["size"] for c in classes], dtype=np.float64)
        sizes = np.clip(base * rel * rng.uniform(0.8, 1.25, size=n), lo, hi)
        wool_tex = _fractal_noise(rng, s, s, 2.0, 2)
        for (x, y), cls, size in zip(_place_objects(rng, n, s, sizes), classes, sizes):
            box = _draw_sheep(rng, img, x, y, float(size), p.presets[int(cls)], light, wool_tex)
            if box is not None:
                boxes.append((int(cls), *box))
    img = _apply_lighting(rng, img, s)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), boxes


def _apply_lighting(rng: np.random.Generator, img: np.ndarray, s: int) -> np.ndarray:
    """Global gain, linear illumination gradient, colour temperature, optional blur, sensor noise."""
    gain = rng.uniform(0.65, 1.25)
    g = rng.uniform(-0.18, 0.18)
    ga = rng.uniform(0, 2 * math.pi)
    t = np.linspace(-0.5, 0.5, s, dtype=np.float32)
    grad = 1.0 + g * (t[None, :] * math.cos(ga) + t[:, None] * math.sin(ga))
    temp = rng.uniform(-0.07, 0.07)
    tint = np.array([1 + temp, 1.0, 1 - temp], dtype=np.float32)
    img = img * (gain * grad)[..., None] * tint
    if rng.random() < 0.3:  # slight defocus / motion blur: 3-tap box along a random axis
        axis = int(rng.integers(0, 2))
        img = (np.roll(img, 1, axis=axis) + img + np.roll(img, -1, axis=axis)) / 3.0
    sigma = rng.uniform(0.004, 0.025)
    return img + np.float32(sigma) * rng.standard_normal(img.shape, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Dataset checks
# --------------------------------------------------------------------------------------------------


def _parse_names(data: dict[str, Any], yaml_path: Path) -> list[str]:
    """Class names from a ``names`` list or ``{id: name}`` mapping; checks ``nc`` agrees."""
    names = data.get("names")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DatasetError(f"'names' in {str(yaml_path)!r} must map ids 0..{len(keys) - 1} to names; "
                               f"got ids {keys}", obj=names)
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"dataset yaml {str(yaml_path)!r} needs a non-empty 'names' list or mapping "
                           f"(e.g. names: {{0: sheep}}); got {names!r}", obj=names)
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DatasetError(f"dataset yaml {str(yaml_path)!r} says nc={nc!r} but lists {len(names)} names; "
                           "make them agree", obj=nc)
    return [str(n) for n in names]


def _datasets_dir() -> Path | None:
    """ultralytics' ``datasets_dir`` setting when ultralytics is loaded in this process (the user's setting)."""
    uu = sys.modules.get("ultralytics.utils")
    value = getattr(uu, "DATASETS_DIR", None) if uu is not None else None
    return Path(value) if value is not None else None


def _dataset_root(data: dict[str, Any], yaml_path: Path) -> Path:
    """Dataset root as ultralytics finds it: ``path`` (absolute, or relative to the working directory,
    else relative to ultralytics' ``datasets_dir`` setting), else the yaml's folder."""
    root = data.get("path")
    if not root:
        return yaml_path.parent.resolve()
    root = Path(str(root)).expanduser()
    relative = not root.is_absolute()
    datasets_dir = _datasets_dir()
    if not root.exists() and relative and datasets_dir is not None:
        root = datasets_dir / root
    if not root.is_dir():
        where = f" or in ultralytics' datasets_dir {str(datasets_dir)!r}" if datasets_dir is not None else ""
        hint = (f"; a relative 'path' is looked up in the working directory{where}, not the yaml's folder: "
                "write an absolute path or drop 'path' to use the yaml's folder") if relative else ""
        raise DatasetError(f"dataset root {str(root)!r} (key 'path' in {str(yaml_path)!r}) is not a directory"
                           f"{hint}", obj=root)
    return root.resolve()


def _split_images(root: Path, entry: Any, split: str, yaml_path: Path) -> list[Path]:
    """Image files of one split: a folder, a ``.txt`` list of image paths, or a list of either."""
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for e in entries:
        p = Path(str(e)).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in _IMG_SUFFIXES and f.is_file())
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    f = Path(line.strip())
                    f = f if f.is_absolute() else p.parent / f
                    if not f.is_file():
                        raise DatasetError(f"image {str(f)!r} listed in {str(p)!r} does not exist", obj=f)
                    files.append(f)
        else:
            raise DatasetError(f"{split} images {str(p)!r} (from {str(yaml_path)!r}) do not exist; check "
                               f"'path' and '{split}' in the yaml", obj=p)
    if not files:
        raise DatasetError(f"the {split} split of {str(yaml_path)!r} holds no images (looked in {entries!r}); "
                           "add images or fix the yaml", obj=entries)
    return files


def _label_path(image: Path) -> Path:
    """YOLO convention: the last ``/images/`` in the path becomes ``/labels/``, suffix ``.txt``."""
    parts = list(image.parts)
    idx = max((i for i, part in enumerate(parts) if part == "images"), default=None)
    if idx is None:
        return image.with_suffix(".txt")
    parts[idx] = "labels"
    return Path(*parts).with_suffix(".txt")


def _check_label_file(path: Path, nc: int) -> int:
    """Validate one label file (a missing file means no objects); return the number of objects."""
    if not path.exists():
        return 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"label file {str(path)!r} cannot be read ({e})", obj=path) from e
    n = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{lineno}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 fields 'cls cx cy w h', got {len(fields)} ({line.strip()!r})",
                               obj=path)
        try:
            values = [float(f) for f in fields]
        except ValueError as e:
            raise DatasetError(f"{where}: non-numeric field in {line.strip()!r}", obj=path) from e
        cls = values[0]
        if not all(math.isfinite(v) for v in values):
            raise DatasetError(f"{where}: non-finite value in {line.strip()!r}", obj=path)
        if cls != int(cls) or not 0 <= int(cls) < nc:
            raise DatasetError(f"{where}: class id {fields[0]} out of range for nc={nc}; use 0..{nc - 1} or "
                               "add names to the yaml", obj=path)
        cx, cy, w, h = values[1:]
        tol = 1e-3
        if not (-tol <= cx <= 1 + tol and -tol <= cy <= 1 + tol and 0 < w <= 1 + tol and 0 < h <= 1 + tol):
            raise DatasetError(f"{where}: box {fields[1:]} is not normalised (centres in [0, 1], sizes in (0, 1])",
                               obj=path)
        n += 1
    return n
