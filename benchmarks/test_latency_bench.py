"""CPU latency of dense vs structured-pruned models, in PyTorch and ONNX Runtime, as ratios.

yolov8n at -50% MACs (`structured-50`) and TokenC3-LSNet-n at -40% MACs
(`tokenc3-lsnet-structured`), each at 320 and 640 px, batch 1, 2 threads. The two models of a pair
are timed in one interleaved run (warm-up, rotating order, per-round ratios): see
``modprune.measure.latency``. ``extra_info`` holds the medians, the ratio's median and p10-p90, the
MACs reduction, and the share of the MACs reduction that shows up as latency (goal: >= 0.75).

    make bench PYTEST_ARGS="-k latency --benchmark-json=bench.json"
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

import modprune
from modprune.measure import count_macs, measure_latency

pytest.importorskip("ultralytics")

THREADS = 2
ROUNDS = 10
CASES = {
    "yolov8n": ("yolov8n.yaml", "structured-50", 320),
    "tokenc3-lsnet-n": ("yolov13n_lsnet_p2_simple.yaml", "tokenc3-lsnet-structured", 128),
}
_PAIRS: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(dense, pruned), built once per session; pruning traces at a small size (MACs ratios of these
    convolutional models do not depend on the input size)."""
    if name not in _PAIRS:
        from modprune.integrations.ultralytics.offline import ensure_offline

        ensure_offline()
        cfg, recipe, trace = CASES[name]
        torch.manual_seed(0)
        dense = modprune.load(cfg).eval()
        pruned = copy.deepcopy(dense)
        modprune.prune(pruned, modprune.load_recipe(recipe), example_inputs=torch.zeros(1, 3, trace, trace))
        _PAIRS[name] = (dense, pruned.eval())
    return _PAIRS[name]


def _runners(engine: str, dense: torch.nn.Module, pruned: torch.nn.Module, imgsz: int, tmp: Path) -> dict[str, Any]:
    if engine == "torch":
        return {"dense": dense, "pruned": pruned}
    from modprune.evaluate import export_onnx, ort_session

    return {
        key: ort_session(export_onnx(model, tmp / f"{key}.onnx", imgsz), THREADS)
        for key, model in (("dense", dense), ("pruned", pruned))
    }


@pytest.mark.parametrize("engine", ["torch", "ort"])
@pytest.mark.parametrize("imgsz", [320, 640])
@pytest.mark.parametrize("model", list(CASES))
def test_latency_torch_and_ort(benchmark, model: str, imgsz: int, engine: str) -> None:
    dense, pruned = _pair(model)
    x = torch.zeros(1, 3, imgsz, imgsz)
    macs_reduction = 1 - count_macs(pruned, x) / count_macs(dense, x)
    with tempfile.TemporaryDirectory() as tmp:
        runners = _runners(engine, dense, pruned, imgsz, Path(tmp))
        result = benchmark.pedantic(
            measure_latency, args=(runners, x), kwargs={"warmup": 3, "rounds": ROUNDS, "threads": THREADS},
            rounds=1, iterations=1,
        )
    ratio = result["ratios"]["pruned"]
    latency_reduction = 1 - ratio["median"]
    benchmark.extra_info.update(
        dense_median_ms=result["models"]["dense"]["median_ms"],
        pruned_median_ms=result["models"]["pruned"]["median_ms"],
        ratio_median=ratio["median"], ratio_p10=ratio["p10"], ratio_p90=ratio["p90"],
        macs_reduction=macs_reduction, latency_reduction=latency_reduction,
        share_of_macs_reduction=latency_reduction / macs_reduction,
    )
    assert 0 < macs_reduction < 1
