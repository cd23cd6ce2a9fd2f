"""Fine-tuning budgets after ``tokenc3-lsnet-fast``, from a base trained by ``distill_compare.py``.

    python benchmarks/tokenc3_fast_finetune.py --base fast-out/runs/base/weights/best.pt \\
        --data fast-out/data/data.yaml --out acc-out

The base is pruned with ``tokenc3-lsnet-fast`` on a 640 px input, then fine-tuned from the same pruned
weights once per budget (``both``: output + feature distillation for 5 epochs; ``output`` for 15 epochs),
each validated at 128 px on the dataset's validation split. Writes ``OUT/acc.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import modprune

BUDGETS = (("both-5", 5, "both"), ("output-15", 15, "output"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="acc-out")
    a = p.parse_args()
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.integrations.ultralytics.validate import validate

    out = Path(a.out).resolve()
    base = modprune.load(a.base)
    results = {"base": validate(base, a.data, imgsz=128)}
    pruned = copy.deepcopy(base)
    started = time.perf_counter()
    report = modprune.prune(pruned, modprune.load_recipe("tokenc3-lsnet-fast"), torch.zeros(1, 3, 640, 640))
    results["prune"] = {"achieved": report.achieved, "seconds": time.perf_counter() - started}
    for name, epochs, mode in BUDGETS:
        options = FinetuneOptions(epochs=epochs, imgsz=128, batch=16, project_dir=out, name=name, seed=0, distill=mode)
        started = time.perf_counter()
        tuned = finetune(copy.deepcopy(pruned), a.data, options, teacher=base)
        results[name] = {**validate(tuned, a.data, imgsz=128), "seconds": time.perf_counter() - started}
    out.mkdir(parents=True, exist_ok=True)
    (out / "acc.json").write_text(json.dumps(results, indent=2, default=str))
    for name, r in results.items():
        if "mAP50" in r:
            print(f"| {name} | {r['mAP50']:.4f} | {r['mAP50-95']:.4f} |")


if __name__ == "__main__":
    main()
