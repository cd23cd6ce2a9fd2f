"""The latency target on a real detector: yolov8n pruned with ``yolo-fast-50`` (latency -50%, PyTorch CPU,
1 thread) on a latency table measured on this machine, then dense and pruned (both fused) timed in one
interleaved run. ``extra_info`` holds the measured ratio and its interval, the machine check, the table's
prediction and its error, and the MACs reduction. The table is cached under the user's cache directory,
so a second run measures no layer again.

    make bench PYTEST_ARGS="-k latency_target --benchmark-json=bench.json"
    MODPRUNE_BENCH_IMGSZ=320 make bench PYTEST_ARGS="-k latency_target"   # a quicker size
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

import modprune
from modprune.measure import MeasuredLatencyTable, count_macs, measure_latency, predict_latency

pytest.importorskip("ultralytics")

IMGSZ = int(os.environ.get("MODPRUNE_BENCH_IMGSZ", "640"))
THREADS = 1
ROUNDS = 20


def test_latency_target_yolov8n(benchmark) -> None:
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    torch.manual_seed(0)
    dense = modprune.load("yolov8n.yaml").eval()
    pruned = copy.deepcopy(dense)
    x = torch.zeros(1, 3, IMGSZ, IMGSZ)
    table = MeasuredLatencyTable(threads=THREADS)
    report = modprune.prune(pruned, modprune.load_recipe("yolo-fast-50"), x, latency_table=table)
    fused = {"dense": modprune.fuse(dense), "pruned": modprune.fuse(pruned)}
    result = benchmark.pedantic(measure_latency, args=(fused, x), kwargs={"warmup": 3, "rounds": ROUNDS,
                                                                          "threads": THREADS},
                                rounds=1, iterations=1)
    ratio = result["ratios"]["pruned"]
    residual_model = report.latency
    predicted = residual_model["predicted_ms"]
    measured = result["models"]["pruned"]["median_ms"]
    benchmark.extra_info.update(
        imgsz=IMGSZ, threads=THREADS, achieved_in_prune=report.achieved, ratio_median=ratio["median"],
        ratio_ci=(ratio["ci_low"], ratio["ci_high"]), reliable=result["reliable"],
        machine=(result["machine"] or {}).get("reasons"), predicted_ms=predicted, measured_ms=measured,
        prediction_error=(predicted - measured) / measured, table_entries=len(table.entries),
        layers_only_ms=predict_latency(pruned, x, table).layers_ms,
        macs_reduction=1 - count_macs(pruned, x) / count_macs(dense, x),
    )
    assert 0 < ratio["median"] < 1.5
