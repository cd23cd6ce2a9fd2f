"""Prune-time overhead: ``modprune.prune`` end to end (report included) against the raw tool (issue 11).

    python benchmarks/prune_overhead.py --rounds 5 --out prune_overhead.json

resnet18 (torchvision, random weights), 40% of the MACs removed, L2 channel importance, 224 px, 1 thread.
Two raw arms, the classifier left alone in both: ``raw-oneshot``, one ``BasePruner`` step at the channel
ratio that lands on the target (found beforehand by bisection, untimed: the best case for the raw tool);
``raw-loop``, what a torch-pruning user writes without knowing that ratio: ``iterative_steps`` and a MACs
count after each step until the target is met (``tp.utils.count_ops_and_params``). modprune: ``modprune.prune(model, PruneConfig(method="structured", target=0.4,
target_kind="macs", importance="l2"), x)``, which also counts MACs and parameters for its report.
Rounds alternate the order; each arm prunes a fresh copy. Prints the medians and the ratio of medians.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

import modprune

TARGET = 0.4


def _oneshot(model: torch.nn.Module, x: torch.Tensor, ratio: float) -> tuple[float, float]:
    import torch_pruning as tp

    start = time.perf_counter()
    base, _ = tp.utils.count_ops_and_params(model, x)
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[model.fc])
    pruner.step()
    seconds = time.perf_counter() - start
    return seconds, 1 - tp.utils.count_ops_and_params(model, x)[0] / base


def _ratio_for_target(base: torch.nn.Module, x: torch.Tensor) -> float:
    lo, hi = 0.0, 0.9
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _oneshot(copy.deepcopy(base), x, mid)[1] < TARGET else (lo, mid)
    return hi


def _raw(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    import torch_pruning as tp

    start = time.perf_counter()
    base, _ = tp.utils.count_ops_and_params(model, x)
    pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.6, iterative_steps=30, ignored_layers=[model.fc])
    macs = base
    while macs > (1 - TARGET) * base and pruner.current_step < pruner.iterative_steps:
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, x)
    return time.perf_counter() - start, 1 - macs / base


def _ours(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    config = modprune.PruneConfig(method="structured", target=TARGET, target_kind="macs", importance="l2")
    start = time.perf_counter()
    report = modprune.prune(model, config, x)
    return time.perf_counter() - start, report.achieved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="prune_overhead.json")
    a = p.parse_args()
    import torchvision

    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = torchvision.models.resnet18(weights=None).eval()
    x = torch.zeros(1, 3, 224, 224)
    modprune.get_plugin_manager()
    ratio = _ratio_for_target(base, x)
    arms = {"raw-oneshot": lambda m: _oneshot(m, x, ratio), "raw-loop": lambda m: _raw(m, x),
            "modprune": lambda m: _ours(m, x)}
    for run in arms.values():
        run(copy.deepcopy(base))  # warm-up, untimed
    times: dict[str, list[float]] = {name: [] for name in arms}
    achieved: dict[str, float] = {}
    for r in range(a.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for name in order:
            seconds, achieved[name] = arms[name](copy.deepcopy(base))
            times[name].append(seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {raw: {"of_medians": med["modprune"] / med[raw],
                    "per_round_median": statistics.median(m / t for m, t in zip(times["modprune"], times[raw]))}
              for raw in ("raw-oneshot", "raw-loop")}
    result = {"model": "resnet18", "target_macs": TARGET, "threads": 1, "rounds": a.rounds, "oneshot_ratio": ratio,
              "seconds": times, "median_s": med, "achieved": achieved, "modprune_vs": ratios,
              "load_average": os.getloadavg()}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    for name in arms:
        print(f"{name}: median {med[name]:.3f} s, MACs -{achieved[name]:.3f}")
    for raw, r in ratios.items():
        print(f"modprune end to end / {raw}: {r['of_medians']:.2f}x (per-round median {r['per_round_median']:.2f}x)")
    print(f"load average {result['load_average'][0]:.2f}")

if __name__ == "__main__":
    main()
