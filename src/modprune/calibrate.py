"""BatchNorm recalibration: re-estimate running statistics after pruning, from unlabelled images.

Removing channels changes what every later BatchNorm sees, while its running mean and variance still
describe the unpruned network; a one-shot prune then loses much more accuracy than the removal
itself explains. :func:`calibrate_batchnorm` resets each BatchNorm's running statistics and
re-estimates them as a cumulative average over a few batches (``momentum=None``), with only the
BatchNorm layers in training mode, no gradients, and every module's mode and momentum restored after.
No weight changes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from modprune.exceptions import DatasetError, ModpruneError

__all__ = ["IMAGE_SUFFIXES", "batches_of", "calibrate_batchnorm", "image_batches", "image_files"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``folder`` (recursively, sorted by path).

    :raises DatasetError: ``folder`` is no directory or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"calibration images: {str(folder)!r} is not a directory", str(folder))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(
            f"calibration images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(folder)!r}",
            str(folder),
        )
    return files


def _read(path: Path, imgsz: int) -> torch.Tensor:
    """An RGB image letterboxed to ``imgsz`` x ``imgsz`` (grey padding), as a float CHW tensor in [0, 1]."""
    from PIL import Image  # noqa: PLC0415 - optional until images are read

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = imgsz / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.BILINEAR)
            canvas = Image.new("RGB", (imgsz, imgsz), (114, 114, 114))
            canvas.paste(im, ((imgsz - size[0]) // 2, (imgsz - size[1]) // 2))
    except OSError as exc:
        raise DatasetError(f"calibration image {str(path)!r} cannot be read: {exc}", str(path)) from None
    data = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
    return data.view(imgsz, imgsz, 3).permute(2, 0, 1).float().div(255)


def image_batches(folder: str | os.PathLike[str], imgsz: int, batch_size: int = 8) -> Iterator[torch.Tensor]:
    """Batches ``(B, 3, imgsz, imgsz)`` of the images under ``folder`` (recursively, sorted by path)."""
    return batches_of(image_files(folder), imgsz, batch_size)


def batches_of(files: Iterable[str | os.PathLike[str]], imgsz: int, batch_size: int = 8) -> Iterator[torch.Tensor]:
    """Batches ``(B, 3, imgsz, imgsz)`` of these image files, in order, letterboxed, read lazily."""
    files = [Path(f) for f in files]
    for start in range(0, len(files), batch_size):
        yield torch.stack([_read(p, imgsz) for p in files[start : start + batch_size]])


def _inputs(data: Any) -> Iterable[Any]:
    if isinstance(data, (str, os.PathLike)):
        raise ModpruneError("calibrate_batchnorm: pass image_batches(folder, imgsz) for a folder of images", data)
    if isinstance(data, torch.Tensor):
        return [data]
    return data


def _batch_of(item: Any) -> Any:
    """The model input in a loader item: a tensor, the first element of a tuple/list, or ``img``."""
    if isinstance(item, dict) and "img" in item:
        item = item["img"]
    elif isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, torch.Tensor) and item.dtype == torch.uint8:
        item = item.float().div(255)
    return item


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, data: Any, *, batches: int | None = None) -> int:
    """Re-estimate every BatchNorm's running statistics of ``model`` on ``data`` (in place).

    :param data: a batch tensor, or an iterable of batches (tensors; ``(tensor, ...)`` tuples and
        ``{"img": tensor}`` dicts use their image; uint8 images are scaled to [0, 1]), e.g.
        :func:`image_batches`.
    :param batches: use at most this many batches (default: all).
    :returns: the number of batches used.
    :raises ModpruneError: no batch was given, or ``batches`` is not a positive integer.
    """
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        raise ModpruneError(f"calibrate_batchnorm: batches must be a positive integer, got {batches!r}", batches)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    saved = {m: {k: v.clone() for k, v in m.state_dict().items()} for m in norms}
    used = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the calibration batches
            m.train()
        for item in _inputs(data):
            if batches is not None and used >= batches:
                break
            batch = _batch_of(item)
            model(batch.to(device) if isinstance(batch, torch.Tensor) else batch)
            used += 1
    except BaseException:
        _put_back(saved)
        raise
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    if not used:
        _put_back(saved)
        raise ModpruneError("calibrate_batchnorm: no calibration batch was given", data)
    log.info("recalibrated %d BatchNorm layers on %d batches", len(norms), used)
    return used


def _put_back(saved: dict[nn.Module, dict[str, torch.Tensor]]) -> None:
    """The running statistics from before a calibration that failed."""
    for m, state in saved.items():
        m.load_state_dict(state)
