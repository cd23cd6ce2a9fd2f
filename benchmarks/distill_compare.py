"""Output-level vs feature-level distillation after structured pruning (same base, same pruned model, same seed).

    python benchmarks/distill_compare.py --out distill-out                      # defaults: a small CPU run
    python benchmarks/distill_compare.py --n-train 256 --imgsz 128 --base-epochs 20 --ft-epochs 5 --out d

Protocol: synthetic data (``modprune data synth``, one class), yolov8n (nc=1) trained from scratch for
``--base-epochs``, pruned structurally to ``--target`` of its MACs (L2 importance), then fine-tuned for
``--ft-epochs`` from the same pruned weights with the unpruned base as teacher, once per distillation mode:
no distillation, ``output``, ``feature`` (channel-wise distillation of the Detect head's inputs) and
``both``. Every run uses the same seed. Writes ``OUT/distill.json`` with mAP50 / mAP50-95 per mode and
prints a Markdown table; the numbers in docs/results.md come from that file.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import modprune


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="distill-out")
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--n-val", type=int, default=32)
    p.add_argument("--imgsz", type=int, default=96)
    p.add_argument("--base-epochs", type=int, default=5)
    p.add_argument("--ft-epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--target", type=float, default=0.40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="none,output,feature,both")
    return p.parse_args()


def main() -> None:
    a = _args()
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    from ultralytics.nn.tasks import DetectionModel

    from modprune.data import generate_dataset
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.integrations.ultralytics.validate import validate

    out = Path(a.out).resolve()
    started = time.perf_counter()
    data = generate_dataset(out / "data", n_train=a.n_train, n_val=a.n_val, imgsz=a.imgsz, seed=a.seed, overwrite=True)
    torch.manual_seed(a.seed)
    base = finetune(DetectionModel("yolov8n.yaml", nc=1, verbose=False), data,
                    FinetuneOptions(epochs=a.base_epochs, imgsz=a.imgsz, batch=a.batch, project_dir=out / "runs",
                                    name="base", seed=a.seed, keep_zeros=False))
    results = {"base": validate(base, data, imgsz=a.imgsz)}
    pruned = copy.deepcopy(base)
    config = modprune.PruneConfig(method="structured", target=a.target, target_kind="macs", importance="l2")
    report = modprune.prune(pruned, config, torch.zeros(1, 3, a.imgsz, a.imgsz))
    results["pruned (no fine-tune)"] = validate(pruned, data, imgsz=a.imgsz)
    for mode in a.modes.split(","):
        opts = FinetuneOptions(epochs=a.ft_epochs, imgsz=a.imgsz, batch=a.batch, project_dir=out / "runs",
                               name=f"ft-{mode}", seed=a.seed, distill="output" if mode == "none" else mode)
        tuned = finetune(pruned, data, opts, teacher=None if mode == "none" else base)
        results[f"fine-tuned, distill {mode}"] = validate(tuned, data, imgsz=a.imgsz)
    record = {"settings": vars(a), "macs_removed": report.achieved, "seconds": time.perf_counter() - started,
              "torch_threads": torch.get_num_threads(),
              "results": {k: {m: v[m] for m in ("mAP50", "mAP50-95")} for k, v in results.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.json").write_text(json.dumps(record, indent=2))
    print(f"| model | mAP50 | mAP50-95 |\n|---|---|---|")
    for k, v in record["results"].items():
        print(f"| {k} | {v['mAP50']:.4f} | {v['mAP50-95']:.4f} |")
    print(f"\nMACs removed {100 * report.achieved:.1f}%, total {record['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
