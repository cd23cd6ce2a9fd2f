"""CUDA latency: the interleaved harness of :mod:`modprune.measure.latency` on the GPU, in fp32 and fp16,
at several batch sizes.

Each call is timed between two CUDA events on the current stream and synchronised before the next
(kernels are asynchronous: host timers alone would time the launch). The models are copied to the GPU
(the caller's stay where they are); fp16 copies are ``.half()`` models fed fp16 inputs.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure.latency import measure_latency

__all__ = ["DTYPES", "cuda_available", "measure_cuda"]

#: dtype names accepted by :func:`measure_cuda`.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16}


def cuda_available() -> bool:
    """True when PyTorch sees a CUDA device."""
    return bool(torch.cuda.is_available())


def _check(models: Mapping[str, nn.Module], batches: Sequence[int], dtypes: Sequence[str]) -> None:
    if not cuda_available():
        raise ConfigError("CUDA timing needs a CUDA device, and torch.cuda.is_available() is False", obj=None)
    if not isinstance(models, Mapping) or not models or not all(isinstance(m, nn.Module) for m in models.values()):
        raise ConfigError("models must be a non-empty mapping {name: nn.Module}", obj=models)
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise ConfigError(f"unknown dtypes {bad}; valid: {', '.join(DTYPES)}", obj=dtypes)
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ConfigError(f"batches must be positive integers, got {batches!r}", obj=batches)


def measure_cuda(
    models: Mapping[str, nn.Module],
    imgsz: int,
    *,
    batches: Sequence[int] = (1, 16),
    dtypes: Sequence[str] = ("fp32", "fp16"),
    channels: int = 3,
    warmup: int = 10,
    rounds: int = 30,
    baseline: str | None = None,
    device: str = "cuda",
) -> dict[str, dict[str, Any]]:
    """Time ``models`` on the GPU for every (dtype, batch): ``{"fp32/b1": measure_latency result, ...}``.

    The models of one configuration are timed together (interleaved, per-round ratios against
    ``baseline``, bootstrap intervals); the busy-machine detector uses load and spread only (the CPU
    waits for the GPU, so its CPU time says nothing).

    :raises ConfigError: no CUDA device, an unknown dtype or a bad batch size.
    """
    _check(models, batches, dtypes)
    results: dict[str, dict[str, Any]] = {}
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        on_gpu = {name: copy.deepcopy(m).to(device=device, dtype=dtype).eval() for name, m in models.items()}
        for batch in batches:
            x = torch.randn(batch, channels, imgsz, imgsz, device=device, dtype=dtype)
            res = measure_latency(on_gpu, x, warmup=warmup, rounds=rounds, baseline=baseline)
            res.update(dtype=dtype_name, batch=batch, gpu=torch.cuda.get_device_name(torch.device(device)))
            results[f"{dtype_name}/b{batch}"] = res
        del on_gpu
        torch.cuda.empty_cache()
    return results
