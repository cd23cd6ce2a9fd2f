"""One-shot structured pruning of a trained detector, without fine-tuning: what BatchNorm
recalibration and the ``bn_l1`` importance keep.

Trains yolov8n (nc=1) briefly on modprune's synthetic dataset, then prunes copies of it by a MACs
target with no fine-tuning, and validates each (mAP50 on the synthetic val split):

* importance ``l1`` (the default) and ``bn_l1`` (BatchNorm |gamma| x next layers' input-weight L1),
* each without and with :func:`modprune.calibrate_batchnorm` on the (unlabelled) training images.

    python benchmarks/oneshot_calibration.py --out /tmp/oneshot            # writes oneshot.json, prints a table

Everything is seeded (dataset, training, pruning); numbers vary with the torch/ultralytics versions.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch


def _train(data_yaml: Path, out: Path, args: argparse.Namespace) -> torch.nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    torch.manual_seed(args.seed)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    options = FinetuneOptions(epochs=args.epochs, imgsz=args.imgsz, project_dir=out / "runs", batch=16,
                              name="train", seed=args.seed, keep_zeros=False)
    return finetune(model, data_yaml, options)


def _variant(trained: torch.nn.Module, importance: str, calibrate: bool, data_yaml: Path, train_images: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    import modprune
    from modprune.integrations.ultralytics.validate import validate

    model = copy.deepcopy(trained)
    config = modprune.PruneConfig(method="structured", target=args.target, target_kind="macs",
                                  importance=importance, seed=args.seed)
    report = modprune.prune(model, config, torch.rand(1, 3, args.imgsz, args.imgsz))
    if calibrate:
        modprune.calibrate_batchnorm(model, modprune.image_batches(train_images, args.imgsz, 16),
                                     batches=args.calib_batches)
    metrics = validate(model, data_yaml, imgsz=args.imgsz, batch=16)
    return {"importance": importance, "calibrated": calibrate, "macs_removed": report.achieved,
            "mAP50": metrics["mAP50"], "mAP50-95": metrics["mAP50-95"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (dataset, training run, json)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-val", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.3, help="fraction of MACs to remove")
    parser.add_argument("--calib-batches", type=int, default=8, help="calibration batches of 16 images")
    args = parser.parse_args()

    from modprune.data import generate_dataset
    from modprune.integrations.ultralytics.offline import ensure_offline
    from modprune.integrations.ultralytics.validate import validate

    ensure_offline()
    args.out.mkdir(parents=True, exist_ok=True)
    data_yaml = generate_dataset(args.out / "data", n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz,
                                 seed=args.seed, overwrite=True)
    started = time.time()
    trained = _train(data_yaml, args.out, args)
    base = validate(trained, data_yaml, imgsz=args.imgsz, batch=16)
    rows = [{"importance": "-", "calibrated": False, "macs_removed": 0.0, "mAP50": base["mAP50"],
             "mAP50-95": base["mAP50-95"]}]
    for importance in ("l1", "bn_l1"):
        for calibrate in (False, True):
            rows.append(_variant(trained, importance, calibrate, data_yaml, data_yaml.parent / "images" / "train", args))
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "seconds": time.time() - started,
              "torch": torch.__version__, "python": platform.python_version()}
    (args.out / "oneshot.json").write_text(json.dumps(result, indent=2))
    print("| importance | BN recalibrated | MACs removed | mAP50 | retained | mAP50-95 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        kept = row["mAP50"] / base["mAP50"] if base["mAP50"] else float("nan")
        print(f"| {row['importance']} | {'yes' if row['calibrated'] else 'no'} | {row['macs_removed']:.3f} | "
              f"{row['mAP50']:.3f} | {kept:.0%} | {row['mAP50-95']:.3f} |")


if __name__ == "__main__":
    main()
