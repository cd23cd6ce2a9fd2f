"""Predicted against measured latency of pruned models (issue 11: within 10% on at least five variants).

    python benchmarks/latency_prediction.py --out benchmarks/results/latency_prediction.json

Each variant is pruned with a latency target on a 640 px example input (PyTorch CPU, 1 thread, the
machine's measured per-layer table, cached under the modprune cache directory). The prune report carries
the table's prediction for the pruned model and the latency measured in the same run (fused dense and
pruned models timed in interleaved rounds); their relative error is what this script collects. Untrained
models (from their yamls, seed 0): the latency does not depend on the weights. The machine's load and the
busy check are recorded with each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import modprune

#: (name, model yaml, recipe or (method, target), nc)
VARIANTS = [
    ("yolov8n yolo-fast-50", "yolov8n.yaml", "yolo-fast-50"),
    ("yolov8n latency 0.30", "yolov8n.yaml", ("structured", 0.30)),
    ("yolov8n latency 0.40", "yolov8n.yaml", ("structured", 0.40)),
    ("TokenC3-LSNet-n tokenc3-lsnet-fast", "yolov13n_lsnet_p2_simple.yaml", "tokenc3-lsnet-fast"),
    ("TokenC3-LSNet-n latency 0.30", "yolov13n_lsnet_p2_simple.yaml", ("structured", 0.30)),
]


def _config(spec) -> modprune.PruneConfig:
    if isinstance(spec, str):
        return modprune.load_recipe(spec)
    method, target = spec
    return modprune.PruneConfig(method=method, target=target, target_kind="latency", importance="l2",
                                pruner_options={"latency_threads": 1})


def _variant(name: str, yaml: str, spec, size: int) -> dict:
    torch.manual_seed(0)
    model = modprune.load(yaml).eval()
    started = time.perf_counter()
    report = modprune.prune(model, _config(spec), torch.zeros(1, 3, size, size))
    lat = report.latency or {}
    return {"variant": name, "achieved": report.achieved, "macs_removed": 1 - report.macs_after / report.macs_before,
            "predicted_ms": lat.get("predicted_ms"), "measured_ms": lat.get("measured_ms"),
            "prediction_error": lat.get("prediction_error"), "reliable": lat.get("reliable"),
            "seconds": time.perf_counter() - started, "load_average": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/latency_prediction.json")
    p.add_argument("--imgsz", type=int, default=640)
    a = p.parse_args()
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    rows = [_variant(name, yaml, spec, a.imgsz) for name, yaml, spec in VARIANTS]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"imgsz": a.imgsz, "threads": 1, "rows": rows}, indent=2, default=str))
    print("| variant | latency removed (measured) | MACs removed | predicted ms | measured ms | error | reliable |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        err = f"{100 * r['prediction_error']:+.1f}%" if r["prediction_error"] is not None else "n/a"
        print(f"| {r['variant']} | {r['achieved']:.3f} | {r['macs_removed']:.3f} | {r['predicted_ms']:.1f} | "
              f"{r['measured_ms']:.1f} | {err} | {r['reliable']} |")


if __name__ == "__main__":
    main()
