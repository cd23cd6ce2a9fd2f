"""Zoo coverage: modprune's structured pruner against raw torch-pruning on the public model zoo.

Every case of ``tests/zoo/cases.py`` (timm, torchvision and ultralytics architectures with random
weights, never downloaded) is pruned at its MACs target (-30 % for most) twice:

* **modprune**: ``modprune.prune(model, PruneConfig(method="structured", target, target_kind="macs"))``
  with the case's ``protect_modules``;
* **raw torch-pruning**: ``torch_pruning.pruner.MetaPruner`` with L1 magnitude importance, the case's
  classifier / heads ignored, and the uniform ``pruning_ratio`` found by bisection so that the MACs
  reduction lands on the target (what a user of torch-pruning alone would do).

Each run is classified: ``pruned`` (the model runs, every returned tensor keeps its shape, the MACs
reduction is within 0.02 of the target), ``off target`` (runs, shapes kept, reduction elsewhere),
``refused`` (modprune only: an ``UnsupportedModelError`` / ``UnreachableTargetError`` saying why),
``broken`` (runs no more, or a returned shape changed), ``error`` (any other exception), ``timeout``
(over the per-case budget).

    python benchmarks/zoo_coverage.py -o zoo_coverage.json            # then --markdown for the table
    python benchmarks/zoo_coverage.py --only timm/resnet18 --only ultralytics/yolov8n.yaml

Single-threaded; times are wall seconds on whatever machine runs it (marked by the load average).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.zoo.cases import CASES, Case, output_shapes, raw_ignored_layers  # noqa: E402

TOLERANCE = 0.02


class Timeout(Exception):
    pass


def _alarm(seconds: int) -> None:
    def fire(signum: int, frame: Any) -> None:
        raise Timeout(f"over {seconds} s")

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)


def _macs(model: torch.nn.Module, x: Any) -> int:
    from modprune.measure import count_macs

    return count_macs(model, x)


def _outcome(model: torch.nn.Module, x: Any, case: Case, before: list, achieved: float) -> str:
    from modprune.measure.walk import call_model

    model.eval()
    try:
        with torch.no_grad():
            shapes = output_shapes(call_model(model, x), case.task)
    except Exception:  # noqa: BLE001 - the pruned model no longer runs
        return "broken"
    if shapes != before:
        return "broken"
    return "pruned" if abs(achieved - case.target) <= TOLERANCE else "off target"


def run_modprune(case: Case, x: Any, before: list) -> dict[str, Any]:
    import modprune

    model = case.build().eval()
    config = modprune.PruneConfig(method="structured", target=case.target, target_kind="macs",
                                  protect_modules=case.protect_modules, pruner_options=case.pruner_options)
    try:
        report = modprune.prune(model, config, x)
    except (modprune.UnsupportedModelError, modprune.UnreachableTargetError) as exc:
        if "Timeout: over" in str(exc):  # the budget's alarm, caught and re-raised by the tracer
            raise Timeout(str(exc).splitlines()[0][:200]) from exc
        return {"outcome": "refused", "why": str(exc).splitlines()[0][:200]}
    return {"outcome": _outcome(model, x, case, before, report.achieved), "achieved": round(report.achieved, 4)}


def _raw_once(base: torch.nn.Module, case: Case, x: Any, ratio: float, macs0: int) -> tuple[torch.nn.Module, float]:
    import torch_pruning as tp

    model = copy.deepcopy(base)
    inputs = x[0] if isinstance(x, tuple) else x  # a tuple of positional arguments (torchvision detectors)
    pruner = tp.pruner.MetaPruner(model, inputs, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=raw_ignored_layers(model, case))
    pruner.step()
    return model, 1 - _macs(model, x) / macs0


def run_raw(case: Case, x: Any, before: list, steps: int = 7) -> dict[str, Any]:
    torch.manual_seed(0)
    base = case.build().eval()
    macs0 = _macs(base, x)
    lo, hi, best = 0.0, 0.9, None
    try:
        for _ in range(steps):
            ratio = (lo + hi) / 2
            model, achieved = _raw_once(base, case, x, ratio, macs0)
            if best is None or abs(achieved - case.target) < abs(best[1] - case.target):
                best = (model, achieved, ratio)
            if abs(achieved - case.target) <= TOLERANCE / 2:
                break
            lo, hi = (ratio, hi) if achieved < case.target else (lo, ratio)
    except Timeout:
        raise
    except Exception as exc:  # noqa: BLE001 - what raw torch-pruning does on this model is the result
        return {"outcome": "error", "why": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
    model, achieved, ratio = best
    return {"outcome": _outcome(model, x, case, before, achieved), "achieved": round(achieved, 4),
            "pruning_ratio": round(ratio, 4)}


def _timed(fn: Callable[[], dict[str, Any]], budget: int) -> dict[str, Any]:
    started = time.perf_counter()
    _alarm(budget)
    try:
        result = fn()
    except Timeout as exc:
        result = {"outcome": "timeout", "why": str(exc)}
    except Exception as exc:  # noqa: BLE001
        result = {"outcome": "error", "why": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
    finally:
        signal.alarm(0)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def run_case(case: Case, budget: int) -> dict[str, Any]:
    from modprune.measure.walk import call_model

    torch.manual_seed(0)
    x = case.inputs(case.size)
    with torch.no_grad():
        before = output_shapes(call_model(case.build().eval(), x), case.task)
    row = {"case": case.id, "target": case.target, "size": case.size,
           "modprune": _timed(lambda: run_modprune(case, x, before), budget),
           "torch_pruning": _timed(lambda: run_raw(case, x, before), budget),
           "load": round(os.getloadavg()[0], 1)}
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | modprune | MACs -% | s | raw torch-pruning | MACs -% | s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m, t = r["modprune"], r["torch_pruning"]
        cell = lambda d: f"{100 * d['achieved']:.1f}" if "achieved" in d else "-"  # noqa: E731
        lines.append(f"| {r['case']} | {m['outcome']} | {cell(m)} | {m['seconds']} | {t['outcome']} | {cell(t)} "
                     f"| {t['seconds']} |")
    lines.append("")
    for tool in ("modprune", "torch_pruning"):
        counts: dict[str, int] = {}
        for r in rows:
            counts[r[tool]["outcome"]] = counts.get(r[tool]["outcome"], 0) + 1
        lines.append(f"- {tool}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" (of {len(rows)})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("zoo_coverage.json"))
    parser.add_argument("--only", action="append", default=[], help="case id (repeatable)")
    parser.add_argument("--budget", type=int, default=300, help="seconds per case and tool")
    parser.add_argument("--markdown", action="store_true", help="print the table of an existing --output file")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.output.read_text())["rows"]))
        return
    torch.set_num_threads(1)
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    cases = [c for c in CASES if not args.only or c.id in args.only]
    rows: list[dict[str, Any]] = []
    started = time.time()
    for case in cases:
        rows.append(run_case(case, args.budget))
        print(json.dumps(rows[-1]), flush=True)
        args.output.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                           "torch": torch.__version__, "threads": 1,
                                           "wall_s": round(time.time() - started), "rows": rows}, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
