"""Where a latency prediction goes wrong: each layer's time inside the model against the table (issue 11).

    python benchmarks/latency_probe.py --model yolov8n.yaml --recipe yolo-fast-50 --imgsz 640

Prunes the model (from its yaml, seed 0) with the recipe on an ``--imgsz`` input, then for the fused dense
and pruned models compares, per convolution / linear call, three times at 1 thread:

* **in model**: the median over ``--forwards`` forwards, between forward pre- and post-hooks;
* **cached**: the latency table's entry, as a prediction would read it (measured now if missing);
* **fresh**: the same layer timed alone now (:func:`~modprune.measure.latency_table.time_call`).

in model / cached above 1 is time the table does not see (the residual has to carry it); fresh / cached
away from 1 says the cached entries were measured in another state of the machine. Writes ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from typing import Any

import torch
from torch import nn

import modprune


def in_model_ms(model: nn.Module, x: torch.Tensor, modules: list[nn.Module], forwards: int) -> dict[int, float]:
    """Median milliseconds of each module's calls over ``forwards`` forwards (3 untimed first)."""
    started: dict[int, float] = {}
    samples: dict[int, list[float]] = {}

    def pre(module: nn.Module, _inputs: Any) -> None:
        started[id(module)] = time.perf_counter()

    def post(module: nn.Module, _inputs: Any, _output: Any) -> None:
        samples.setdefault(id(module), []).append(time.perf_counter() - started[id(module)])

    handles = [h for m in modules for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            samples.clear()
            for _ in range(forwards):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def probe(model: nn.Module, x: torch.Tensor, table: Any, forwards: int) -> dict[str, Any]:
    """Summed in-model, cached and fresh milliseconds of ``model``'s layer calls."""
    from modprune.measure.latency_model import layer_calls
    from modprune.measure.latency_table import time_call

    calls = layer_calls(model, x, 1)
    inside = in_model_ms(model, x, [c.module for c in calls], forwards)
    rows = []
    for call in calls:
        layer, example = call.key.build()
        layer.eval()
        with torch.inference_mode():
            fresh = time_call(lambda: layer(example), 3, 10, 1)  # noqa: B023 - called at once
        rows.append({"layer": call.name, "in_model_ms": inside[id(call.module)], "cached_ms": table.cost_ms(call.key),
                     "fresh_ms": fresh})
    total = {k: sum(r[k] for r in rows) for k in ("in_model_ms", "cached_ms", "fresh_ms")}
    return {**total, "in_model_over_cached": total["in_model_ms"] / total["cached_ms"],
            "fresh_over_cached": total["fresh_ms"] / total["cached_ms"], "calls": len(rows), "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--recipe", default="yolo-fast-50")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--forwards", type=int, default=15)
    p.add_argument("--out", default="latency-probe.json")
    a = p.parse_args()
    from modprune.fusion import fuse
    from modprune.integrations.ultralytics.offline import ensure_offline
    from modprune.measure.latency_table import MeasuredLatencyTable

    ensure_offline()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense = modprune.load(a.model).eval()
    pruned = copy.deepcopy(dense)
    x = torch.zeros(1, 3, a.imgsz, a.imgsz)
    report = modprune.prune(pruned, modprune.load_recipe(a.recipe), x)
    table = MeasuredLatencyTable("torch-cpu", 1)
    result = {"settings": vars(a), "achieved": report.achieved, "load_average": os.getloadavg(),
              "dense": probe(fuse(dense).eval(), x, table, a.forwards),
              "pruned": probe(fuse(pruned).eval(), x, table, a.forwards)}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    for name in ("dense", "pruned"):
        r = result[name]
        print(f"{name}: {r['calls']} calls, in model {r['in_model_ms']:.2f} ms, cached {r['cached_ms']:.2f} ms, fresh "
              f"{r['fresh_ms']:.2f} ms; in model / cached {r['in_model_over_cached']:.3f}, fresh / cached "
              f"{r['fresh_over_cached']:.3f}")


if __name__ == "__main__":
    main()
