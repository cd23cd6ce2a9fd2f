"""ONNX export of (pruned) models, a numerical check against PyTorch, and ONNX Runtime sessions.

Export uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): the dynamo path
needs ``onnxscript``, which modprune does not require. The file is written to a temporary name and
moved into place. ultralytics detection heads are switched to export mode on a copy of the model, so
the graph has one output (decoded boxes and class scores, ``(B, 4 + nc, anchors)``). The exported graph
is the inference form (every conv + BatchNorm pair folded by :func:`modprune.fuse`) unless ``fuse=False``.

``onnx`` and ``onnxruntime`` are imported inside the functions that need them.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from modprune.exceptions import ConfigError, ModelLoadError, OutputPathError, UnsupportedModelError
from modprune.fusion import fuse as fuse_model
from modprune.measure.walk import tensors_of

__all__ = ["export_onnx", "check_onnx", "ort_session", "prepare_for_export", "DEFAULT_OPSET"]

LOG = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def prepare_for_export(model: nn.Module, *, fuse: bool = True) -> nn.Module:
    """A float32 eval-mode copy of ``model`` whose ultralytics heads (``export`` attribute) return one tensor.

    With ``fuse`` (default) the copy is the inference form: every conv + BatchNorm pair folded
    (:func:`modprune.fuse`); masks are baked in either way.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch nn.Module, got {type(model).__name__}", obj=model)
    m = (fuse_model(model) if fuse else _plain_copy(model)).float().eval()
    for mod in m.modules():
        if isinstance(getattr(mod, "export", None), bool):  # ultralytics heads
            mod.export = True
            if hasattr(mod, "format"):
                mod.format = "onnx"
    return m


def _plain_copy(model: nn.Module) -> nn.Module:
    from modprune.pruners.masks import masks_baked  # noqa: PLC0415

    with masks_baked(model):
        return copy.deepcopy(model)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    imgsz: int | Sequence[int],
    *,
    opset: int = DEFAULT_OPSET,
    batch: int = 1,
    channels: int = 3,
    dynamic_batch: bool = False,
    input_name: str = "images",
    check: bool = True,
    fuse: bool = True,
) -> Path:
    """Export ``model`` to ONNX at ``path`` (atomically) for an input of shape ``(batch, channels, h, w)``.

    Args:
        model: Any ``nn.Module`` taking one image tensor (not modified; a copy is exported).
        path: Output ``.onnx`` file.
        imgsz: Square side, or ``(height, width)``.
        opset: ONNX opset version (11..21).
        batch: Batch size of the traced input.
        channels: Input channels.
        dynamic_batch: Mark the batch dimension dynamic.
        input_name: Name of the graph input.
        check: Run ``onnx.checker`` on the written file.
        fuse: Export the inference form (conv + BatchNorm pairs folded, :func:`modprune.fuse`), as deployed.

    Raises:
        ConfigError: invalid size, batch or opset.
        OutputPathError: the file cannot be written.
        UnsupportedModelError: the exporter fails on this model (the message carries its error).
    """
    hw = _parse_imgsz(imgsz)
    for name, value, lo, hi in (("opset", opset, 11, 21), ("batch", batch, 1, 4096), ("channels", channels, 1, 64)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{name}={value!r} must be an integer in [{lo}, {hi}]", obj=value)
    out = Path(path).expanduser()
    m = prepare_for_export(model, fuse=fuse)
    dummy = torch.zeros(batch, channels, *hw)
    tmp = _temp_beside(out)
    try:
        _trace_to_onnx(m, dummy, tmp, opset=opset, input_name=input_name, dynamic_batch=dynamic_batch,
                       original=model)
        if check:
            import onnx  # noqa: PLC0415

            onnx.checker.check_model(tmp)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    LOG.info("exported %s to %s (opset %d, input %s)", type(model).__name__, out, opset, tuple(dummy.shape))
    return out


def _temp_beside(out: Path) -> str:
    """An empty temporary file in ``out``'s folder (created if missing), to be renamed onto ``out``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
    except OSError as e:
        raise OutputPathError(f"cannot write {str(out)!r} ({e}); choose a writable path", obj=out) from e
    return tmp


def _trace_to_onnx(m: nn.Module, dummy: torch.Tensor, tmp: str, *, opset: int, input_name: str,
                   dynamic_batch: bool, original: nn.Module) -> None:
    """Run the TorchScript ONNX exporter on the prepared copy ``m`` into ``tmp``.

    Outputs are named ``output0``, ``output1``...; exporter failures become one UnsupportedModelError
    about ``original`` (the caller's model).
    """
    with torch.no_grad():
        n_out = len(tensors_of(m(dummy)))
    output_names = ["output0"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    dynamic_axes = {input_name: {0: "batch"}, **{o: {0: "batch"} for o in output_names}} if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants
            torch.onnx.export(m, (dummy,), tmp, dynamo=False, opset_version=opset, input_names=[input_name],
                              output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    except Exception as e:  # the exporter raises many types; report them as one modprune error
        raise UnsupportedModelError(f"torch.onnx.export failed for {type(original).__name__}: {type(e).__name__}: {e}",
                                    obj=original) from e


def ort_session(path: str | os.PathLike[str], threads: int = 1, *, providers: Sequence[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` with a fixed intra-op thread count (and one inter-op thread).

    Raises:
        ModelLoadError: the file is missing or ONNX Runtime cannot load it.
        ConfigError: ``threads`` < 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads={threads!r} must be an integer >= 1", obj=threads)
    src = Path(path).expanduser()
    if not src.is_file():
        raise ModelLoadError(f"ONNX file {str(src)!r} does not exist; export it first", obj=src)
    import onnxruntime as ort  # noqa: PLC0415

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(src), sess_options=opts,
                                    providers=list(providers) if providers else ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"ONNX Runtime cannot load {str(src)!r}: {e}", obj=src) from e


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: torch.Tensor,
    atol: float = 1e-3,
    *,
    threads: int = 1,
) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch outputs on ``example_input``.

    The PyTorch side runs an export-mode float32 copy of ``model`` *without* folding its BatchNorms, so the
    check covers the fusion done on export as well as the exporter.

    Raises:
        UnsupportedModelError: the outputs differ in number or shape, or by more than ``atol``.
        ConfigError: ``atol`` is not a non-negative number or ``example_input`` is not a tensor.
    """
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise ConfigError(f"atol={atol!r} must be a non-negative number", obj=atol)
    if not isinstance(example_input, torch.Tensor):
        raise ConfigError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}",
                          obj=example_input)
    sess = ort_session(path, threads)
    m = prepare_for_export(model, fuse=False)
    x = example_input.detach().float().cpu()
    with torch.no_grad():
        expected = [t.detach().numpy() for t in tensors_of(m(x))]
    try:
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    except Exception as e:  # onnxruntime raises its own exception types
        raise UnsupportedModelError(f"ONNX Runtime cannot run {str(path)!r} on an input of shape {tuple(x.shape)} "
                                    f"(exported for another size or batch?): {e}", obj=path) from e
    if len(got) != len(expected):
        raise UnsupportedModelError(f"{str(path)!r} has {len(got)} outputs, PyTorch gives {len(expected)}; "
                                    "re-export the model", obj=path)
    diff = 0.0
    for i, (a, b) in enumerate(zip(expected, got)):
        if a.shape != b.shape:
            raise UnsupportedModelError(f"output {i}: ONNX shape {b.shape} != PyTorch shape {a.shape} (was the "
                                        "model exported for another input size or batch?)", obj=path)
        if a.size:
            diff = max(diff, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    if not diff <= atol:
        raise UnsupportedModelError(f"ONNX Runtime and PyTorch differ by {diff:.3g} (> atol {atol:g}) on "
                                    f"{str(path)!r}; the export is not faithful", obj=diff)
    LOG.info("ONNX check %s: max |diff| = %.3g", path, diff)
    return diff


def _parse_imgsz(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` from an int or a pair; ConfigError otherwise."""
    hw = (imgsz, imgsz) if isinstance(imgsz, int) and not isinstance(imgsz, bool) else tuple(imgsz) \
        if isinstance(imgsz, (tuple, list)) else None
    if hw is None or len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or not 8 <= v <= 8192
                                         for v in hw):
        raise ConfigError(f"imgsz={imgsz!r} must be an integer or (height, width) in [8, 8192]", obj=imgsz)
    return hw[0], hw[1]
