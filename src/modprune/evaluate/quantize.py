"""Static INT8 post-training quantisation of an ONNX model with ONNX Runtime (QDQ, per-channel weights).

Calibration images are letterboxed as ultralytics' predictor does for a fixed-size graph (aspect kept,
grey 114 padding, centred; RGB, scaled to [0, 1], NCHW). Only the weighted operators (Conv, Gemm,
MatMul) are quantised: a detection head's decode (box pixels next to class probabilities in one
tensor) stays float, since one INT8 scale over both would round every score to zero. The ONNX
metadata (ultralytics' stride, names, imgsz...) is carried over to the quantised file, so
``ultralytics.YOLO(path)`` reads it as it reads the float model.

``onnx``, ``onnxruntime`` and ``PIL`` are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from modprune.exceptions import ConfigError, DatasetError, UnsupportedModelError

__all__ = ["QUANTIZED_OPS", "calibration_batches", "letterbox", "quantize_onnx_int8"]

LOG = logging.getLogger(__name__)

#: Operators whose weights and inputs are quantised; every other node stays float.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
_PAD = 114


def letterbox(path: str | os.PathLike[str], size: tuple[int, int]) -> np.ndarray:
    """One image as a ``(3, h, w)`` float32 array in [0, 1]: resized to fit ``size`` keeping its aspect,
    padded with grey (114) on both sides.

    Raises:
        DatasetError: the file cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    h, w = size
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"cannot read calibration image {str(path)!r}: {e}", obj=path) from e
    r = min(h / rgb.height, w / rgb.width)
    nw, nh = max(1, round(rgb.width * r)), max(1, round(rgb.height * r))
    if (nw, nh) != rgb.size:
        rgb = rgb.resize((nw, nh), Image.BILINEAR)
    canvas = np.full((h, w, 3), _PAD, dtype=np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    canvas[top:top + nh, left:left + nw] = np.asarray(rgb)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32) / 255.0


def calibration_batches(images: Sequence[str | os.PathLike[str]], size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Batches of one letterboxed image, ``(1, 3, h, w)``, in order."""
    for path in images:
        yield letterbox(path, size)[None]


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over letterboxed images."""

    def __init__(self, input_name: str, images: Sequence[str | os.PathLike[str]], size: tuple[int, int]) -> None:
        self.input_name = input_name
        self._it = calibration_batches(images, size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}


def _graph_input(model: Any) -> tuple[str, tuple[int, int]]:
    """Name and static ``(h, w)`` of the single image input of an ONNX model."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"INT8 calibration needs a graph with one image input, got {len(inputs)}",
                                    obj=[i.name for i in inputs])
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[2] <= 0 or dims[3] <= 0:
        raise UnsupportedModelError(f"INT8 calibration needs a static (N, C, H, W) input, got {dims}; export "
                                    "without dynamic shapes", obj=dims)
    return inputs[0].name, (dims[2], dims[3])


def _preprocess(src: Path, dst: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation); ``src`` if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:  # noqa: BLE001 - optional step; onnxruntime raises many types
        LOG.warning("quantisation pre-processing skipped (%s: %s); quantising the model as exported",
                    type(e).__name__, e)
        return src
    return dst


def quantize_onnx_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    per_channel: bool = True,
    preprocess: bool = True,
) -> Path:
    """Write a static INT8 (QDQ) copy of the float ONNX model ``src`` to ``dst``, calibrated on ``images``.

    Activations are unsigned 8-bit, weights signed 8-bit (per output channel unless ``per_channel`` is
    False), ranges from min/max calibration. The metadata of ``src`` is copied to ``dst``.

    Raises:
        ConfigError: ``images`` is empty.
        DatasetError: a calibration image cannot be read.
        UnsupportedModelError: the graph has no single static image input, or ONNX Runtime fails.
    """
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    if not images:
        raise ConfigError("INT8 quantisation needs calibration images; pass a dataset with images", obj=images)
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    input_name, size = _graph_input(model)
    metadata = {p.key: p.value for p in model.metadata_props}
    with tempfile.TemporaryDirectory(prefix="modprune-int8-") as tmp:
        work = _preprocess(src, Path(tmp) / "pre.onnx") if preprocess else src
        graph = onnx.load(str(work)).graph
        exclude = [n.name for n in graph.node if n.op_type not in QUANTIZED_OPS]
        del graph
        try:
            quantize_static(str(work), str(dst), _Reader(input_name, images, size), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                            extra_options={"CalibTensorRangeSymmetric": False})
        except (DatasetError, ConfigError):
            raise
        except Exception as e:  # onnxruntime raises many types
            raise UnsupportedModelError(f"ONNX Runtime INT8 quantisation of {str(src)!r} failed: "
                                        f"{type(e).__name__}: {e}", obj=src) from e
    out = onnx.load(str(dst))
    del out.metadata_props[:]
    for key, value in metadata.items():
        prop = out.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(out, str(dst))
    LOG.info("INT8 (QDQ, per-channel=%s) %s -> %s on %d calibration images", per_channel, src, dst, len(images))
    return dst
