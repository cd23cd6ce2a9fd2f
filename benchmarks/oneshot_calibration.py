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
    print("\n".join(oneshot_section(result)))


def oneshot_section(result: dict[str, Any]) -> list[str]:
    """The docs/results.md section for a result of this script (``benchmarks/make_results.py --oneshot``)."""
    a, rows = result["args"], result["rows"]
    base = rows[0]["mAP50"]
    lines = [
        "## One-shot structured pruning: BatchNorm recalibration and `bn_l1`",
        "",
        f"Data: **synthetic** (`modprune.data.generate_dataset`, seed {a['seed']}): {a['n_train']} training and "
        f"{a['n_val']} validation images at {a['imgsz']} px, single class. Model: yolov8n (nc=1) trained from scratch "
        f"for {a['epochs']} epochs at {a['imgsz']} px, batch 16, seed {a['seed']} (ultralytics trainer, CPU). Each row "
        f"prunes a copy by {float(a['target']):.0%} of its MACs (structured, layer-wise) with **no fine-tuning**; "
        f"\"recalibrated\" rows then run `modprune.calibrate_batchnorm` on {a['calib_batches']} batches of 16 "
        "unlabelled training images. Accuracy: ultralytics validator on the validation split. "
        f"torch {result['torch']}; {result['seconds'] / 60:.1f} min in all.",
        "",
        f"Command: `python benchmarks/oneshot_calibration.py --out oneshot --epochs {a['epochs']} --imgsz {a['imgsz']} "
        f"--n-train {a['n_train']} --n-val {a['n_val']} --seed {a['seed']} --target {a['target']}`",
        "",
        "| importance | BN recalibrated | MACs removed | mAP50 | mAP50 retained | mAP50-95 |",
        "|---|---|---|---|---|---|",
    ]
    best = max(rows[1:], key=lambda r: r["mAP50"])
    lines_after = [
        "",
        f"Best one-shot row: `{best['importance']}`{' with recalibration' if best['calibrated'] else ''}, "
        f"{best['mAP50'] / base:.0%} of the unpruned mAP50 kept." if base else "",
    ]
    for row in rows:
        kept = f"{row['mAP50'] / base:.0%}" if base else "-"
        name = "unpruned" if row["importance"] == "-" else f"`{row['importance']}`"
        lines.append(f"| {name} | {'yes' if row['calibrated'] else 'no'} | {row['macs_removed']:.3f} | "
                     f"{row['mAP50']:.3f} | {kept} | {row['mAP50-95']:.3f} |")
    return lines + lines_after

if __name__ == "__main__":
    main()
