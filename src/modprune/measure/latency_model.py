"""Whole-model latency from a per-layer :class:`~modprune.measure.latency_table.LatencyTable`.

``predict_latency(model, example_inputs, table)`` records every convolution / linear call of one
forward pass (its :class:`~modprune.measure.latency_table.LayerKey`), and sums the table's cost of
each. What the table does not know (activations, normalisation, concatenations, attention matmuls,
Python dispatch) is the *residual*: :func:`calibrate_residual` measures the dense model once and keeps
the unexplained remainder, in two parts: a fixed part, the dispatch cost of every other operator call
(counted during one forward, each at the measured cost of a call on a one-element tensor), which
channel pruning does not change; and the rest, element-wise work, scaled by the output elements of the
known layers against the dense model's (it follows the feature-map widths).

:func:`vector_multiple` says which channel multiple the CPU's SIMD kernels work in (8 floats for AVX2,
16 for AVX-512), the width pruning should keep layers on.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure.latency_table import LatencyTable, LayerKey
from modprune.measure.walk import call_model

__all__ = [
    "LatencyPrediction",
    "Residual",
    "calibrate_residual",
    "layer_calls",
    "predict_latency",
    "vector_multiple",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Residual:
    """The dense model's latency that no layer of the table explains (``ms``, of which ``fixed_ms`` is
    operator dispatch that pruning channels does not change), and the output elements of that model's
    known layers (the scale of the element-wise rest)."""

    ms: float = 0.0
    activations: int = 0
    fixed_ms: float = 0.0

    def scaled(self, activations: int) -> float:
        """The residual of a model whose known layers output ``activations`` elements."""
        fixed = min(max(self.fixed_ms, 0.0), self.ms) if self.ms > 0 else 0.0
        if self.activations <= 0:
            return self.ms
        return fixed + (self.ms - fixed) * activations / self.activations


@dataclass(frozen=True)
class LatencyPrediction:
    """A predicted latency: the layers' share, the residual, and the cost of each layer call.

    ``calls`` layer calls were priced, ``noisy_calls`` of them from timings the table took on a busy
    machine (:meth:`~modprune.measure.latency_table.LatencyTable.is_noisy`)."""

    total_ms: float
    layers_ms: float
    residual_ms: float
    activations: int
    per_layer: dict[str, float] = field(default_factory=dict)
    calls: int = 0
    noisy_calls: int = 0


@dataclass(frozen=True)
class LayerCall:
    """One call of a known layer during a forward pass."""

    name: str
    module: nn.Module
    key: LayerKey


def layer_calls(model: nn.Module, example_inputs: Any, threads: int = 1) -> list[LayerCall]:
    """Every convolution / linear call of one forward of ``model`` (eval, no grad; mode restored)."""
    names = {id(m): n for n, m in model.named_modules()}
    calls: list[LayerCall] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        key = LayerKey.of(module, x, threads) if x is not None else None
        if key is not None:
            calls.append(LayerCall(names.get(id(module), "?"), module, key))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls


def predict_latency(model: nn.Module, example_inputs: Any, table: LatencyTable,
                    residual: Residual | None = None) -> LatencyPrediction:
    """Predicted milliseconds of one forward of ``model`` on ``example_inputs``: the table's cost of every
    convolution / linear call, plus ``residual`` scaled to the model's widths (none: layers only)."""
    calls = layer_calls(model, example_inputs, table.threads)
    per_layer: dict[str, float] = {}
    for call in calls:
        per_layer[call.name] = per_layer.get(call.name, 0.0) + table.cost_ms(call.key)
    layers = sum(per_layer.values())
    activations = sum(c.key.output_elements() for c in calls)
    rest = residual.scaled(activations) if residual is not None else 0.0
    noisy = sum(table.is_noisy(c.key) for c in calls)
    return LatencyPrediction(layers + rest, layers, rest, activations, per_layer, len(calls), noisy)


def calibrate_residual(model: nn.Module, example_inputs: Any, table: LatencyTable,
                       measured_ms: float | None = None) -> Residual:
    """The residual of ``model``: its measured latency (``measured_ms``, else timed through the table)
    minus the table's prediction of its layers. A table that cannot time models gives a zero residual."""
    prediction = predict_latency(model, example_inputs, table)
    if measured_ms is None:
        timed = table.measure_models({"model": model}, example_inputs)
        if timed is None:
            return Residual(0.0, prediction.activations)
        measured_ms = timed["ms"]["model"]
    rest = float(measured_ms) - prediction.layers_ms
    fixed = other_ops(model, example_inputs) * table.dispatch_ms() if rest > 0 else 0.0
    return Residual(rest, prediction.activations, min(fixed, rest))


#: Operators the table's layers run, and free views: not counted as dispatch of other work.
_NOT_COUNTED = frozenset({"convolution", "_convolution", "mkldnn_convolution", "addmm", "mm", "bmm", "linear",
                          "detach", "view", "t", "alias", "_unsafe_view"})


def other_ops(model: nn.Module, example_inputs: Any) -> int:
    """Operator calls of one forward (eval, no grad) outside convolutions and matrix products."""
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError:  # pragma: no cover - every supported torch has it
        return 0
    count = [0]

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if str(getattr(func, "__name__", func)).split(".")[0] not in _NOT_COUNTED:
                count[0] += 1
            return func(*args, **(kwargs or {}))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Count():
            call_model(model, example_inputs)
    finally:
        model.train(was_training)
    return count[0]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def vector_multiple(dtype: torch.dtype = torch.float32) -> int:
    """Channels of ``dtype`` one SIMD register holds on this CPU: 16 floats for AVX-512, 8 for AVX2, 4 for
    SSE / NEON (by ``torch.backends.cpu.get_cpu_capability()``, else ``/proc/cpuinfo`` flags)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability().upper()
    except (AttributeError, RuntimeError):
        capability = ""
    flags = _cpu_flags()
    if "AVX512" in capability or "avx512f" in flags:
        bits = 512
    elif "AVX2" in capability or "avx2" in flags:
        bits = 256
    else:
        bits = 128
    size = torch.tensor([], dtype=dtype).element_size()
    return max(1, bits // 8 // size)


def ort_session_of(layer: nn.Module, x: torch.Tensor, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``layer`` alone (exported in memory), ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError("the onnxruntime-cpu latency backend needs onnxruntime (pip install onnxruntime)",
                          layer) from exc
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(layer, (x,), buffer, input_names=["x"], output_names=["y"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
