"""Deployable exports of (pruned) models: ONNX, TorchScript, OpenVINO, optionally INT8.

ultralytics models go through ultralytics' own exporter (the file ``yolo export`` gives: fused, with
stride, names and imgsz in its metadata), so ``ultralytics.YOLO(path)`` predicts and validates with
it on a machine where modprune is not installed. Other torch models are exported to ONNX with
:func:`modprune.evaluate.onnx_export.export_onnx` or traced to TorchScript.

INT8 is static post-training quantisation calibrated on images of a dataset: for ONNX with ONNX
Runtime (:func:`modprune.evaluate.quantize.quantize_onnx_int8`, QDQ, per-channel weights), for
OpenVINO with ultralytics' ``int8=True`` export (NNCF).

Every argument is checked before anything is written; the output appears atomically (written in a
temporary folder beside it, then moved into place).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modprune.exceptions import ConfigError, OutputPathError

__all__ = ["EXPORT_FORMATS", "ExportResult", "check_export_args", "export_model"]

LOG = logging.getLogger(__name__)

#: Supported formats and the suffix the output's name must end with (what ultralytics recognises).
EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": "_openvino_model"}
DEFAULT_CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    format: str
    int8: bool
    imgsz: int
    exporter: str
    calibration_images: int
    seconds: float
    size_bytes: int


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise OutputPathError(f"output {str(out)!r} exists; choose another path (or overwrite it)", obj=out)
    if out.exists() and out.is_dir() != (out.name.endswith("_openvino_model")):
        raise OutputPathError(f"output {str(out)!r} exists and is a {'folder' if out.is_dir() else 'file'}; "
                              "choose another path", obj=out)
    parent = out.parent
    if not parent.is_dir():
        raise OutputPathError(f"output folder {str(parent)!r} does not exist; create it first", obj=parent)
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent)
    except OSError as e:
        raise OutputPathError(f"output folder {str(parent)!r} is not writable ({e.strerror}); choose another "
                              "path", obj=parent) from None
    os.rmdir(probe)


def check_export_args(fmt: str, out: Path, int8: bool, data: str | None, imgsz: int, calib: int, overwrite: bool) -> None:
    """Raise one clear error for a bad argument; writes nothing."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}", obj=fmt)
    if not out.name.endswith(EXPORT_FORMATS[fmt]):
        raise ConfigError(f"a {fmt} output must be named '*{EXPORT_FORMATS[fmt]}' (ultralytics recognises the "
                          f"format by it), got {str(out)!r}", obj=out)
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or not 32 <= imgsz <= 8192 or imgsz % 32:
        raise ConfigError(f"imgsz={imgsz!r} must be a multiple of 32 in [32, 8192]", obj=imgsz)
    if int8:
        if fmt == "torchscript":
            raise ConfigError("INT8 is available for onnx and openvino exports, not torchscript", obj=fmt)
        if not data:
            raise ConfigError("INT8 needs calibration images: pass a dataset yaml (--data D)", obj=data)
        if isinstance(calib, bool) or not isinstance(calib, int) or calib < 1:
            raise ConfigError(f"calibration_images={calib!r} must be a positive integer", obj=calib)
        from modprune.data import check_dataset, dataset_images  # noqa: PLC0415

        check_dataset(data)
        dataset_images(data, "train")  # calibration images: a split without any fails here, before any write
    _check_output(out, overwrite)


def _is_ultralytics(model: nn.Module) -> bool:
    from modprune.integrations.ultralytics.checkpoint import is_ultralytics_model  # noqa: PLC0415

    return is_ultralytics_model(model)


def _plain_export(model: nn.Module, fmt: str, dst: Path, imgsz: int) -> Path:
    if fmt == "onnx":
        from modprune.evaluate.onnx_export import export_onnx  # noqa: PLC0415

        return export_onnx(model, dst, imgsz)
    if fmt == "torchscript":
        m = model.float().eval()
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(m, torch.zeros(1, 3, imgsz, imgsz)), str(dst))
        return dst
    raise ConfigError(f"{fmt} export is available for ultralytics models only; use onnx for "
                      f"{type(model).__name__}", obj=fmt)


def _openvino_calibration(data: str | None, calib: int) -> tuple[int, float]:
    """(images, share of the training split) that calibrate an OpenVINO INT8 export: the first ``calib``."""
    from modprune.data import dataset_images  # noqa: PLC0415

    total = len(dataset_images(data, "train"))
    used = min(calib, total)
    return used, used / total


def _export_into(model: nn.Module, fmt: str, tmp: Path, *, imgsz: int, int8: bool, data: str | None,
                 calib: int) -> tuple[Path, str, int]:
    """Export into the folder ``tmp``; returns (path, exporter name, calibration images used)."""
    ultra = _is_ultralytics(model)
    if ultra:
        from modprune.integrations.ultralytics.export import ultralytics_export  # noqa: PLC0415

        ov_int8 = int8 and fmt == "openvino"
        n_calib = _openvino_calibration(data, calib) if ov_int8 else 0
        path = ultralytics_export(model, tmp, format=fmt, imgsz=imgsz, int8=ov_int8, data=data,
                                  calibration_fraction=n_calib[1] if ov_int8 else None)
        if ov_int8:
            return path, "ultralytics+nncf-int8", n_calib[0]
    else:
        path = _plain_export(model, fmt, tmp / f"model{EXPORT_FORMATS[fmt]}", imgsz)
    if not (int8 and fmt == "onnx"):
        return path, "ultralytics" if ultra else "modprune", 0
    from modprune.data import dataset_images  # noqa: PLC0415
    from modprune.evaluate.quantize import quantize_onnx_int8  # noqa: PLC0415

    images = dataset_images(data, "train")[:calib]
    quantize_onnx_int8(path, tmp / "model_int8.onnx", images)
    return tmp / "model_int8.onnx", ("ultralytics" if ultra else "modprune") + "+onnxruntime-int8", len(images)


def export_model(
    model: nn.Module,
    output: str | os.PathLike[str],
    *,
    format: str = "onnx",  # noqa: A002
    imgsz: int = 640,
    int8: bool = False,
    data: str | os.PathLike[str] | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``model`` (not modified) to ``output`` for deployment.

    Args:
        model: An ultralytics detection model (pruned or not) or any torch module taking one image.
        output: The file (``*.onnx``, ``*.torchscript``) or folder (``*_openvino_model``) to write.
        format: ``onnx``, ``torchscript`` or ``openvino``.
        imgsz: Square input size (a multiple of 32).
        int8: Static INT8 quantisation calibrated on the first ``calibration_images`` training images of
            ``data`` (ONNX: ONNX Runtime QDQ with per-channel weights; OpenVINO: ultralytics + NNCF).
        data: A YOLO dataset yaml (needed for ``int8``).
        calibration_images: How many training images calibrate INT8 (the first ones; OpenVINO: ultralytics
            takes that share of the training split).
        overwrite: Replace an existing output.

    Raises:
        ConfigError: an unknown format, a wrong output suffix, INT8 without data, a missing package.
        OutputPathError: the output exists or its folder cannot be written.
        DatasetError: the dataset is malformed.
        UnsupportedModelError: the exporter failed on this model.
    """
    out = Path(output).expanduser()
    data_s = str(data) if data is not None else None
    check_export_args(format, out, int8, data_s, imgsz, calibration_images, overwrite)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        path, exporter, n_calib = _export_into(model, format, Path(tmp), imgsz=imgsz, int8=int8, data=data_s,
                                               calib=calibration_images)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(path, out)
    result = ExportResult(path=out, format=format, int8=int8, imgsz=imgsz, exporter=exporter,
                          calibration_images=n_calib, seconds=time.perf_counter() - t0, size_bytes=_size(out))
    LOG.info("exported %s to %s (%s%s)", type(model).__name__, out, format, ", int8" if int8 else "")
    return result
