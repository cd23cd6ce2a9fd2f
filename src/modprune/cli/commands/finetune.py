"""``modprune finetune MODEL --data D --epochs N [--distill TEACHER] -o OUT [--train-arg KEY=VALUE ...]``.

Fine-tunes with ultralytics' trainer while keeping the given (pruned) architecture and its zeros.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pruned ultralytics model, keeping its architecture")
    p.add_argument("model", help="pruned model (modprune file, ultralytics or fork checkpoint)")
    p.add_argument("--data", required=True, help="dataset yaml (YOLO format; 'path' as ultralytics resolves it)")
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--imgsz", type=int, default=640, help="training image size (default 640)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--device", default="cpu", help="'cpu' (default), '0', '0,1' (several GPUs)...")
    p.add_argument("--workers", type=int, default=0, help="dataloader workers (default 0)")
    p.add_argument("--optimizer", default=None,
                   help="ultralytics optimizer name, e.g. SGD, AdamW (default auto: ultralytics picks the optimizer "
                        "and its learning rate)")
    p.add_argument("--lr0", type=float, help="initial learning rate (with --optimizer; default: ultralytics')")
    p.add_argument("--nominal-batch", type=int,
                   help="images per optimizer step: gradients accumulate over nominal-batch / batch batches "
                        "(default: ultralytics' 64; --nominal-batch 16 at batch 16 steps after every batch)")
    p.add_argument("--patience", type=int, help="early stopping after this many epochs without improvement")
    p.add_argument("--name", default="finetune", help="run name inside the runs directory (default finetune)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run --runs-dir/--name")
    p.add_argument("--reset-head", action="store_true",
                   help="re-initialise the head's class outputs when the model's classes differ from the data's")
    p.add_argument("--train-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other ultralytics training argument (repeatable), e.g. --train-arg cos_lr=True")
    p.add_argument("--distill", metavar="TEACHER", help="distil from this (unpruned) model's outputs")
    p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation loss")
    p.add_argument("--no-keep-zeros", action="store_true", help="let zeroed weights grow back")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", help="where ultralytics writes its runs (default: <ultralytics runs_dir>/modprune)")
    p.add_argument("-o", "--output", required=True, help="where to write the fine-tuned model")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints that need arbitrary pickle code")
    p.set_defaults(func=run)


def parse_train_args(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> ultralytics overrides (values read as YAML scalars: ``True``, ``0.5``, ``SGD``)."""
    import yaml

    from modprune.exceptions import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--train-arg {item!r} must be KEY=VALUE (e.g. cos_lr=True)", item)
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def optimizer_options(optimizer: str | None, lr0: float | None) -> dict[str, Any]:
    """``FinetuneOptions`` fields for ``--optimizer`` / ``--lr0`` (None: not given).

    A named optimizer drops any rate set elsewhere (a recipe's ``lr0`` belongs to the recipe's optimizer)
    unless ``lr0`` is given too.
    """
    out: dict[str, Any] = {}
    if optimizer is not None:
        out["optimizer"] = optimizer
        out["lr0"] = None  # another optimizer starts from its own (ultralytics') rate unless --lr0 says
    if lr0 is not None:
        out["lr0"] = lr0
    return out


def run(args: argparse.Namespace) -> int:
    from modprune.cli.common import check_output
    from modprune.data import check_dataset
    from modprune.exceptions import ConfigError, OutputPathError
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, default_runs_dir, finetune
    from modprune.serialization import load, save

    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}", args.epochs)
    inputs = [args.model, args.distill, args.data, check_dataset(args.data).root]
    out = check_output(args.output, inputs, force=args.force)
    if out.exists() and not args.force:
        raise OutputPathError(f"output {str(out)!r} exists; pass --force to replace it", str(out))
    options = FinetuneOptions(
        epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
        project_dir=Path(args.runs_dir).resolve() if args.runs_dir else default_runs_dir(),
        name=args.name, distill_weight=args.distill_weight, keep_zeros=not args.no_keep_zeros, seed=args.seed,
        workers=args.workers, device=str(args.device), patience=args.patience, resume=args.resume,
        reset_head=args.reset_head, overrides=parse_train_args(args.train_arg), verbose=True,
        nominal_batch=args.nominal_batch, **optimizer_options(args.optimizer, args.lr0),
    )  # validated (unknown --train-arg keys included) before anything is loaded
    check_dataset(args.data)
    if args.runs_dir:  # ultralytics writes its run into RUNS_DIR/finetune
        check_output(Path(args.runs_dir) / "finetune", inputs, force=True, directory=True)
    model = load(args.model, trust_pickle=args.trust_pickle).float()
    teacher = load(args.distill, trust_pickle=args.trust_pickle).float() if args.distill else None
    tuned = finetune(model, args.data, options, teacher=teacher)
    meta = {"finetune": {"data": str(args.data), "epochs": args.epochs, "imgsz": args.imgsz,
                         "distill": args.distill, "seed": args.seed, "run": str(Path(options.project_dir) / args.name)}}
    save(tuned, out, metadata=meta, overwrite=args.force or not out.exists())
    print(f"wrote {out}")
    return 0
