"""Depth pruning of TokenC3-LSNet-n and yolov8n: blocks removed, MACs removed, latency ratio (fused, 1 thread).

Usage: ``python benchmarks/depth_measure.py [--imgsz 320] [--target T] [--rounds 12]``. Prints one JSON
line per model: the blocks removed (name, output change, MACs), the MACs reduction at the calibration size,
and the interleaved per-round latency ratio (pruned / dense, both fused, batch 1, 1 thread) with its 95%
bootstrap interval and whether the busy-machine detector fired (then the ratio is not a clean figure).
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

import modprune
from modprune.measure.latency import measure_latency


def _models() -> dict[str, torch.nn.Module]:
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    from ultralytics.nn.tasks import DetectionModel

    models = {"yolov8n": DetectionModel("yolov8n.yaml", nc=80, verbose=False)}
    try:
        from modprune_tokenc3_lsnet import build_model

        models["tokenc3-lsnet-n"] = build_model("yolov13n_lsnet_p2_simple.yaml")
    except ImportError:
        pass
    return models


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--target", type=float, default=None, help="MACs target for every model (default: "
                        "0.1 for yolov8n, whose six shortcut Bottlenecks hold 16%% of its MACs; 0.08 for TokenC3-LSNet-n, "
                        "whose 28 removable units hold 9.6%% at 320 px)")
    parser.add_argument("--models", nargs="*", default=None, help="only these (yolov8n, tokenc3-lsnet-n)")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(0))
    for name, model in _models().items():
        model = model.float().eval()
        pruned = copy.deepcopy(model)
        if args.models and name not in args.models:
            continue
        target = args.target if args.target is not None else 0.1 if name == "yolov8n" else 0.08
        config = modprune.PruneConfig(method="depth", target=target, target_kind="macs")
        report = modprune.prune(pruned, config, example_inputs=x)
        removed = [n for n in report.notes if "removed" in n]
        timing = measure_latency({"dense": modprune.fuse(model), "depth": modprune.fuse(pruned)}, x,
                                 rounds=args.rounds, warmup=2, threads=1)
        ratio = timing["ratios"]["depth"]
        print(json.dumps({"model": name, "imgsz": args.imgsz, "target": target,
                          "macs_reduction": round(report.achieved, 4), "prune_seconds": round(report.seconds, 1),
                          "blocks_removed": removed, "latency_ratio": round(ratio["median"], 3),
                          "ci": [round(ratio["ci_low"], 3), round(ratio["ci_high"], 3)],
                          "reliable": timing["reliable"], "machine": timing["machine"]}), flush=True)


if __name__ == "__main__":
    main()
