"""CUDA timing (skipped without a CUDA device)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure.gpu import cuda_available, measure_cuda
from modprune.measure.latency import measure_latency

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    return {"small": small, "big": big}


def test_cuda_timing_refused_without_cuda() -> None:
    if cuda_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="CUDA"):
        measure_cuda(_nets(), 32)


@needs_cuda
def test_cuda_fp32_fp16_batch_1_and_16() -> None:
    nets = _nets()
    res = measure_cuda(nets, 32, rounds=10, warmup=2)
    assert set(res) == {"fp32/b1", "fp32/b16", "fp16/b1", "fp16/b16"}
    for key, r in res.items():
        assert r["device"] == "cuda" and r["dtype"] == key.split("/")[0] and r["batch"] == int(key[-2:].strip("b"))
        assert all(m["median_ms"] > 0 for m in r["models"].values())
        assert r["machine"]["cpu_wall_ratio"] is None  # the CPU waits for the GPU: not a busy signal
        assert r["ratios"]["big"]["ci_low"] <= r["ratios"]["big"]["ci_high"]
    assert next(nets["small"].parameters()).device.type == "cpu"  # the caller's models stay put


@needs_cuda
def test_cuda_events_time_the_kernels_not_the_launch() -> None:
    big = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(8)]).cuda()
    tiny = nn.Conv2d(64, 64, 1).cuda()
    x = torch.randn(16, 64, 128, 128, device="cuda")
    res = measure_latency({"tiny": tiny, "big": big}, x, rounds=10, warmup=2)
    assert res["device"] == "cuda" and res["ratios"]["big"]["median"] > 2  # asynchronous launches would tie
