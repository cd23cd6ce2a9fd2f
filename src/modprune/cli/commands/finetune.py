"""``modprune finetune MODEL --data D --epochs N [--distill TEACHER] -o OUT``.

Fine-tunes with ultralytics' trainer while keeping the given (pruned) architecture and its zeros.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pruned ultralytics model, keeping its architecture")
    p.add_argument("model", help="pruned model (modprune file or ultralytics checkpoint)")
    p.add_argument("--data", required=True, help="dataset yaml (YOLO format)")
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--imgsz", type=int, default=640, help="training image size (default 640)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--distill", metavar="TEACHER", help="distil from this (unpruned) model's outputs")
    p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation loss")
    p.add_argument("--no-keep-zeros", action="store_true", help="let zeroed weights grow back")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", help="where ultralytics writes its run (default: a temporary directory)")
    p.add_argument("-o", "--output", required=True, help="where to write the fine-tuned model")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints that need arbitrary pickle code")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune.cli.common import check_output
    from modprune.data import check_dataset
    from modprune.exceptions import ConfigError, OutputPathError
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.serialization import load, save

    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}", args.epochs)
    inputs = [args.model, args.distill, args.data, check_dataset(args.data).root]
    out = check_output(args.output, inputs, force=args.force)
    if args.runs_dir:  # ultralytics writes its run into RUNS_DIR/finetune
        check_output(Path(args.runs_dir) / "finetune", inputs, force=True, directory=True)
    model = load(args.model, trust_pickle=args.trust_pickle).float()
    teacher = load(args.distill, trust_pickle=args.trust_pickle).float() if args.distill else None
    with tempfile.TemporaryDirectory(prefix="modprune-finetune-") as tmp:
        options = FinetuneOptions(
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
            project_dir=Path(args.runs_dir or tmp).resolve(),
            distill_weight=args.distill_weight,
            keep_zeros=not args.no_keep_zeros,
            seed=args.seed,
            verbose=True,
        )
        tuned = finetune(model, args.data, options, teacher=teacher)
    meta = {"finetune": {"data": str(args.data), "epochs": args.epochs, "imgsz": args.imgsz,
                         "distill": args.distill, "seed": args.seed}}
    if out.exists() and not args.force:
        raise OutputPathError(f"output {str(out)!r} appeared during fine-tuning; pass --force to replace it", str(out))
    save(tuned, out, metadata=meta)
    print(f"wrote {out}")
    return 0
