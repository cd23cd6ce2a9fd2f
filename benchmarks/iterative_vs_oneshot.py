"""Iterative pruning against one-shot pruning at an equal fine-tuning budget (issue 12).

    python benchmarks/iterative_vs_oneshot.py --base fast-out/runs/base/weights/best.pt \\
        --data fast-out/data/data.yaml --recipe tokenc3-lsnet-structured --epochs 6 --steps 3 --out iter-out

One-shot: the recipe in one step, then ``--epochs`` epochs of fine-tuning with output distillation from
the base. Iterative: :func:`modprune.prune_iteratively` in ``--steps`` steps to the same target, each
followed by ``epochs / steps`` epochs (same distillation), so both spend the same epochs. Validation at
``--imgsz`` on the dataset's validation split. ``--seed`` sets both arms' fine-tuning. ``--warmup-epochs W``
sets ultralytics' learning-rate warm-up of every fine-tuning run, both arms alike (its default, 3, capped at
``epochs - 1``, spends half of each 2-epoch step warming up). ``--schedule cubic`` runs the iterative arm on
Zhu & Gupta's gradual schedule (large cuts first); ``--arms iterative`` skips the one-shot arm (same seed,
same machine: the same one-shot figures as an earlier run). Both arms fine-tune with the recipe's
``finetune`` section; ``--nominal-batch N`` sets the images per optimizer step (ultralytics' ``nbs``, 64 by
default: at batch 16 a 2-epoch step of 256 images makes 12 optimizer steps, at ``--nominal-batch 16`` 32).
``--step-epochs 1,1,1,5`` splits the iterative arm's ``--epochs`` unevenly over its steps
(``prune_iteratively(step_epochs=...)``: most of the budget after the last cut); they must add up to
``--epochs``. Writes ``OUT/iterative.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import modprune
from modprune.workflows.iterative import SCHEDULES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", default="tokenc3-lsnet-structured")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--out", default="iter-out")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed of both arms")
    p.add_argument("--schedule", choices=SCHEDULES, default="linear",
                   help="the iterative arm's schedule (prune_iteratively(schedule=...))")
    p.add_argument("--arms", choices=("both", "iterative"), default="both",
                   help="'iterative' skips the one-shot arm (its figures from an earlier run of the same settings)")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="ultralytics warmup_epochs of every fine-tuning run (default: ultralytics' own)")
    p.add_argument("--nominal-batch", type=int, default=None,
                   help="images per optimizer step of every fine-tuning run (default: the recipe's, else "
                        "ultralytics' 64)")
    p.add_argument("--step-epochs", default=None,
                   help="the iterative arm's epochs per step, e.g. 1,1,1,5 (adding up to --epochs; default "
                        "--epochs / --steps each)")
    a = p.parse_args()
    step_epochs = [int(e) for e in a.step_epochs.split(",")] if a.step_epochs else None
    if step_epochs is not None and (len(step_epochs) != a.steps or sum(step_epochs) != a.epochs):
        p.error("--step-epochs needs one count per step, adding up to --epochs (equal budgets)")
    if step_epochs is None and a.epochs % a.steps:
        p.error("--epochs must be a multiple of --steps (equal budgets)")
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.integrations.ultralytics.validate import validate
    from modprune.workflows.iterative import prune_iteratively

    out = Path(a.out).resolve()
    overrides = {} if a.warmup_epochs is None else {"warmup_epochs": a.warmup_epochs}
    base = modprune.load(a.base)
    recipe, x = modprune.find_recipe(a.recipe), torch.zeros(1, 3, a.imgsz, a.imgsz)
    config, settings = recipe.config, dict(recipe.finetune)  # the recipe's fine-tuning, as the CLI uses it
    if a.nominal_batch is not None:
        settings["nominal_batch"] = a.nominal_batch
    results: dict = {"settings": vars(a), "base": validate(base, a.data, imgsz=a.imgsz)}

    if a.arms == "both":
        started = time.perf_counter()
        one = copy.deepcopy(base)
        report = modprune.prune(one, config, x)
        opts = FinetuneOptions(epochs=a.epochs, imgsz=a.imgsz, batch=16, project_dir=out, name="oneshot",
                               seed=a.seed, overrides=overrides, **settings)
        one = finetune(one, a.data, opts, teacher=base)
        results["one-shot"] = {**validate(one, a.data, imgsz=a.imgsz), "achieved": report.achieved,
                               "seconds": time.perf_counter() - started}

    started = time.perf_counter()
    it = copy.deepcopy(base)
    opts = FinetuneOptions(epochs=a.epochs // a.steps or 1, imgsz=a.imgsz, batch=16, project_dir=out, name="iter",
                           seed=a.seed, overrides=overrides, **settings)
    result = prune_iteratively(it, config, a.data, opts, steps=a.steps, example_inputs=x, distill="output",
                               schedule=a.schedule, step_epochs=step_epochs)
    results["iterative"] = {**validate(it, a.data, imgsz=a.imgsz), "seconds": time.perf_counter() - started,
                            "steps": [getattr(r, "__dict__", str(r)) for r in getattr(result, "steps", [])]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "iterative.json").write_text(json.dumps(results, indent=2, default=str))
    for name in [n for n in ("base", "one-shot", "iterative") if n in results]:
        r = results[name]
        print(f"| {name} | {r['mAP50']:.4f} | {r['mAP50-95']:.4f} |")


if __name__ == "__main__":
    main()
