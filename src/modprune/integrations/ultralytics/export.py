"""Export an in-memory (pruned) ultralytics model through ultralytics' own exporter.

The file is the one ``yolo export`` writes: the model fused, the detection head in export mode, and
ultralytics' metadata (stride, names, imgsz, task...) embedded, so ``ultralytics.YOLO(file)`` predicts
and validates with it. A traced ONNX, TorchScript or OpenVINO graph needs no Python class of the model
at load time: it runs where neither modprune nor a modprune plugin is installed.

The exporter runs offline: :func:`~modprune.integrations.ultralytics.offline.ensure_offline` is called
first (no AutoInstall), and ONNX simplification (``onnxslim``) is used only when it is importable.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from pathlib import Path
from typing import Any

from torch import nn

from modprune.exceptions import ConfigError, UnsupportedModelError

__all__ = ["ULTRALYTICS_FORMATS", "ultralytics_export"]

LOG = logging.getLogger(__name__)

#: Formats exported through ultralytics, and the file or folder suffix ultralytics gives each.
ULTRALYTICS_FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": "_openvino_model"}


def _exportable_copy(model: nn.Module, workdir: Path) -> nn.Module:
    """A float32 eval copy with what ``YOLO`` objects add (``task``) and a file name inside ``workdir``."""
    from ultralytics.nn.tasks import guess_model_task  # noqa: PLC0415

    m = copy.deepcopy(model).float().eval()
    if not getattr(m, "task", None):
        m.task = guess_model_task(m)
    if isinstance(getattr(m, "args", None), dict):
        m.args = {**m.args, "data": m.args.get("data") or ""}  # the exporter reads args["data"]
    m.pt_path = str(workdir / "model.pt")  # the exporter names its outputs after this file
    if getattr(m, "yaml", None) is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no ultralytics 'yaml' attribute; export it with "
                                    "the plain ONNX exporter instead", obj=model)
    return m


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"this export needs the '{module}' package; install it with "
                          f"'pip install modprune[{extra}]' (or 'pip install {module}')", obj=module)


def _check_format(format: str, int8: bool) -> None:  # noqa: A002
    """ConfigError for an unknown format or a missing package the format needs."""
    if format not in ULTRALYTICS_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(ULTRALYTICS_FORMATS)}",
                          obj=format)
    if format == "onnx":
        _require("onnx", "onnx")
    if format == "openvino":
        _require("openvino", "openvino")
        if int8:
            _require("nncf", "openvino")


def ultralytics_export(
    model: nn.Module,
    workdir: str | Path,
    *,
    format: str = "onnx",  # noqa: A002 - ultralytics' own argument name
    imgsz: int = 640,
    int8: bool = False,
    data: str | None = None,
    calibration_fraction: float | None = None,
    simplify: bool | None = None,
    opset: int | None = None,
    verbose: bool = False,
) -> Path:
    """Export ``model`` (not modified) with ultralytics' ``Exporter`` into ``workdir``; return the written path.

    Args:
        model: An ultralytics ``DetectionModel`` (pruned or not).
        workdir: An existing folder for the output (named ``model.onnx``, ``model.torchscript`` or
            ``model[_int8]_openvino_model/``).
        format: ``onnx``, ``torchscript`` or ``openvino``.
        imgsz: Square input size.
        int8: INT8 through ultralytics (OpenVINO with NNCF, calibrated on ``data``); ONNX INT8 is done by
            :func:`modprune.evaluate.quantize.quantize_onnx_int8` instead.
        data: The dataset yaml used for INT8 calibration (OpenVINO): its training images, letterboxed as
            ultralytics' validator does (ultralytics' own default would be the validation split).
        calibration_fraction: The share of the training images that calibrate INT8 (default all).
        simplify: Run onnxslim on an ONNX export; default: when onnxslim is importable.
        opset: ONNX opset (ultralytics' choice when None).
        verbose: Let ultralytics log its export steps.

    Raises:
        ConfigError: an unknown format, or a package the format needs is missing.
        UnsupportedModelError: ultralytics' exporter failed on this model.
    """
    _check_format(format, int8)
    from modprune.integrations.ultralytics.offline import ensure_offline  # noqa: PLC0415
    from modprune.integrations.ultralytics.validate import quiet_ultralytics  # noqa: PLC0415

    ensure_offline()
    from ultralytics.engine.exporter import Exporter  # noqa: PLC0415

    if simplify is None:
        simplify = importlib.util.find_spec("onnxslim") is not None
    overrides: dict[str, Any] = {"format": format, "imgsz": int(imgsz), "device": "cpu", "batch": 1, "half": False,
                                 "dynamic": False, "nms": False, "simplify": bool(simplify), "quantize": 8 if int8 else None,
                                 "data": data, "opset": opset, "verbose": verbose}
    if int8:
        overrides.update(split="train", fraction=float(calibration_fraction or 1.0))
    m = _exportable_copy(model, Path(workdir))
    try:
        with quiet_ultralytics(verbose):
            out = Exporter(overrides=overrides)(model=m)
    except Exception as e:  # the exporter raises many types
        raise UnsupportedModelError(f"ultralytics could not export {type(model).__name__} to {format}: "
                                    f"{type(e).__name__}: {e}", obj=model) from e
    if not out:
        raise UnsupportedModelError(f"ultralytics' {format} export of {type(model).__name__} wrote nothing", obj=model)
    LOG.info("ultralytics exported %s to %s", type(model).__name__, out)
    return Path(out)
