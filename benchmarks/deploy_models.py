"""The two models the deployment table compares, without the rest of the demo.

Runs the demo's own steps for the default demo (TokenC3-LSNet-n when its plugin is installed):
synthetic data, the base trained from scratch, the structured recipe and its distillation fine-tune.
It skips the demo's unstructured recipe and its comparison (the deployment table times the
exported files instead). Sizes default to the full demo's (``modprune demo``).

    python benchmarks/deploy_models.py --out demo-output [--epochs 20 --finetune-epochs 5 --seed 0
        --n-train 256 --n-val 64 --imgsz 128 --batch 16]

then ``benchmarks/deploy_table.py --base OUT/base.pt --pruned OUT/structured-finetuned.pt
--data OUT/data/data.yaml ...``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo-output")
    p.add_argument("--demo", help="demo name (default: the first offered)")
    p.add_argument("--epochs", type=int, help="base training epochs (default: the full demo's)")
    p.add_argument("--finetune-epochs", type=int, help="fine-tune epochs (default: the full demo's)")
    p.add_argument("--seed", type=int, help="seed (default: the full demo's)")
    p.add_argument("--n-train", type=int, help="synthetic training images (default: the full demo's)")
    p.add_argument("--n-val", type=int, help="synthetic validation images (default: the full demo's)")
    p.add_argument("--imgsz", type=int, help="data, training and validation size (default: the full demo's)")
    p.add_argument("--batch", type=int, help="training batch (default: the full demo's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    import torch

    from modprune.workflows import demo as d

    spec = d.select_demo(args.demo)
    given = (("train_epochs", args.epochs), ("finetune_epochs", args.finetune_epochs), ("seed", args.seed),
             ("n_train", args.n_train), ("n_val", args.n_val), ("imgsz", args.imgsz), ("batch", args.batch))
    changes = {k: v for k, v in given if v is not None}
    settings = replace(spec.full, **changes)
    run = d._Run(spec=spec, s=settings, out=Path(args.out).resolve(), say=print, total=5)
    run.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    d._make_data(run)
    d._train_base(run)
    d._prune_structured(run)
    print(f"settings: {settings}")
    for name, m in run.metrics.items():
        print(f"{name}: mAP50 {m['mAP50']:.4f} mAP50-95 {m['mAP50-95']:.4f} (synthetic val, {settings.imgsz}px)")
    print(f"total {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
