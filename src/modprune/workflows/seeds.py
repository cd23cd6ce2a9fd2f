"""Run a demo once per seed and summarise its accuracy as mean and spread (``modprune demo --seeds 0,1,2``).

Each seed runs the whole protocol (data, base training, pruning, fine-tuning) into ``out_dir/seed-N``,
so every seed gets its own synthetic dataset and initialisation. The summary reports, per model row and
metric, the mean, the sample standard deviation (0 for one seed), the minimum and the maximum.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from modprune.exceptions import ConfigError
from modprune.serialization import atomic_path

__all__ = ["environment", "parse_seeds", "run_demo_seeds", "summarise"]

METRICS = ("mAP50", "mAP50-95")


def environment() -> dict[str, Any]:
    """What else decides the bits of a result besides the seed: package versions and torch's thread count."""
    import importlib.metadata as md  # noqa: PLC0415
    import platform  # noqa: PLC0415

    import torch  # noqa: PLC0415

    versions = {}
    for name in ("torch", "ultralytics", "numpy", "opencv-python", "opencv-python-headless", "torch-pruning"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return {"versions": versions, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.machine()}


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; raises ConfigError for an empty, negative, repeated or non-integer seed."""
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2", obj=text) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} must list distinct integers >= 0, e.g. 0,1,2", obj=text)
    return seeds


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{seed: {row: {metric: value}}}`` -> ``{row: {metric: {mean, std, min, max, n}}}``."""
    rows = sorted({row for metrics in per_seed.values() for row in metrics})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        out[row] = {}
        for metric in METRICS:
            values = [m[row][metric] for m in per_seed.values() if row in m and metric in m[row]]
            if values:
                out[row][metric] = {"mean": statistics.fmean(values),
                                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                    "min": min(values), "max": max(values), "n": len(values)}
    return out


def run_demo_seeds(out_dir: str | Path, settings: Any, seeds: Sequence[int], *, demo: Any = None,
                   say: Callable[[str], None] | None = None, runner: Callable[..., dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    """Run the demo for each seed (``out_dir/seed-N``); write and return ``seeds.json``'s summary."""
    if runner is None:
        from modprune.workflows.demo import run_demo as runner  # noqa: PLC0415
    say = say or (lambda _m: None)
    out = Path(out_dir).resolve()
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    for seed in seeds:
        say(f"== seed {seed} ({len(per_seed) + 1} of {len(seeds)}) ==")
        result = runner(out / f"seed-{seed}", dataclasses.replace(settings, seed=seed), demo=demo, say=say)
        per_seed[seed] = result["accuracy"]["all"]
    summary = {"seeds": list(seeds), "per_seed": {str(k): v for k, v in per_seed.items()},
               "summary": summarise(per_seed)}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "seeds.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    for row, metrics in summary["summary"].items():
        m = metrics.get("mAP50")
        if m:
            say(f"{row}: mAP50 mean {m['mean']:.4f}, std {m['std']:.4f} (min {m['min']:.4f}, max {m['max']:.4f}, "
                f"{m['n']} seeds)")
    return summary
