"""Fine-tuning budgets after ``tokenc3-lsnet-fast``, from a base trained by ``distill_compare.py``.

    python benchmarks/tokenc3_fast_finetune.py --base fast-out/runs/base/weights/best.pt \\
        --data fast-out/data/data.yaml --out acc-out

The base is pruned with ``tokenc3-lsnet-fast`` on a 640 px input, then fine-tuned from the same pruned
weights once per budget (``--budgets``, each ``MODE-EPOCHS``; default ``both-5,output-15``: output + feature
distillation for 5 epochs, output distillation for 15), each validated at 128 px on the dataset's
validation split; ``--seed`` sets the fine-tuning. ``--recipe`` prunes with another recipe (a name or a
YAML file). ``--dense-control`` also fine-tunes the unpruned base with every budget (distilled from itself),
the control for "extra epochs train an unconverged base further". ``--pruned FILE`` fine-tunes that pruned
model instead of pruning the base (the same weights for every fine-tuning setting). The fine-tuning follows
the recipe's ``finetune`` section; ``--optimizer``, ``--lr0``, ``--nominal-batch``, ``--distill-weight`` and
``--train-arg KEY=VALUE`` (repeatable, any ultralytics training argument) override it. Writes ``OUT/acc.json``
(with the prune's notes and latency figures) and the pruned model ``OUT/pruned.pt``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import modprune
from modprune.integrations.ultralytics.feature_distill import DISTILL_MODES

BUDGETS = "both-5,output-15"


def budgets(text: str) -> list[tuple[str, int, str]]:
    """``"output-5,both-15"`` -> ``[(name, epochs, mode), ...]``."""
    out = []
    for name in text.split(","):
        mode, _, epochs = name.strip().rpartition("-")
        if mode not in DISTILL_MODES or not epochs.isdigit() or int(epochs) < 1:
            raise argparse.ArgumentTypeError(f"budget {name!r} is not MODE-EPOCHS (MODE: {', '.join(DISTILL_MODES)})")
        out.append((name.strip(), int(epochs), mode))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="acc-out")
    p.add_argument("--budgets", type=budgets, default=budgets(BUDGETS), help=f"MODE-EPOCHS list (default {BUDGETS})")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    p.add_argument("--recipe", default="tokenc3-lsnet-fast", help="recipe name or YAML file")
    p.add_argument("--dense-control", action="store_true", help="fine-tune the unpruned base with every budget too")
    p.add_argument("--pruned", help="fine-tune this pruned model instead of pruning the base")
    p.add_argument("--optimizer", help="ultralytics optimizer (default: the recipe's fine-tuning, else auto)")
    p.add_argument("--lr0", type=float, help="initial learning rate (default: the recipe's, else ultralytics')")
    p.add_argument("--nominal-batch", type=int, help="images per optimizer step (default: the recipe's, else "
                                                      "ultralytics' 64)")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation term (default: the recipe's, "
                                                         "else 1)")
    p.add_argument("--train-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other ultralytics training argument (repeatable), e.g. --train-arg warmup_epochs=1")
    a = p.parse_args()
    from modprune.cli.commands.finetune import optimizer_options, parse_train_args

    overrides = parse_train_args(a.train_arg)
    settings = {**modprune.find_recipe(a.recipe).finetune, **optimizer_options(a.optimizer, a.lr0)}
    for key in ("distill_weight", "nominal_batch"):
        if getattr(a, key) is not None:
            settings[key] = getattr(a, key)
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.integrations.ultralytics.validate import validate

    out = Path(a.out).resolve()
    base = modprune.load(a.base)
    results = {"base": validate(base, a.data, imgsz=128)}
    out.mkdir(parents=True, exist_ok=True)
    if a.pruned:
        pruned = modprune.load(a.pruned)
        results["prune"] = {"from": str(a.pruned), "params": sum(p.numel() for p in pruned.parameters())}
    else:
        pruned = copy.deepcopy(base)
        started = time.perf_counter()
        report = modprune.prune(pruned, modprune.load_recipe(a.recipe), torch.zeros(1, 3, 640, 640))
        results["prune"] = {"achieved": report.achieved, "seconds": time.perf_counter() - started,
                            "latency": report.latency, "notes": list(report.notes),
                            "params": sum(p.numel() for p in pruned.parameters())}
        modprune.save(pruned, out / "pruned.pt", metadata={"recipe": str(a.recipe)})
    results["training"] = {**settings, "overrides": overrides, "seed": a.seed}
    arms = [("", pruned)] + ([("dense-", base)] if a.dense_control else [])
    for prefix, start in arms:
        for name, epochs, mode in a.budgets:
            options = FinetuneOptions(epochs=epochs, imgsz=128, batch=16, project_dir=out, name=prefix + name,
                                      seed=a.seed, distill=mode, overrides=overrides, **settings)
            started = time.perf_counter()
            tuned = finetune(copy.deepcopy(start), a.data, options, teacher=base)
            results[prefix + name] = {**validate(tuned, a.data, imgsz=128), "seconds": time.perf_counter() - started}
    (out / "acc.json").write_text(json.dumps(results, indent=2, default=str))
    for name, r in results.items():
        if "mAP50" in r:
            print(f"| {name} | {r['mAP50']:.4f} | {r['mAP50-95']:.4f} |")


if __name__ == "__main__":
    main()
