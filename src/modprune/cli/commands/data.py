"""``modprune data synth DIR`` (write a synthetic dataset) and ``modprune data check DATA_YAML``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthetic datasets: generate and check")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    data_sub.required = True
    s = data_sub.add_parser("synth", help="write a synthetic small-object dataset (YOLO format)")
    s.add_argument("out_dir", help="dataset root (created; must be empty unless --overwrite)")
    s.add_argument("--train", type=int, default=256, help="training images (default 256)")
    s.add_argument("--val", type=int, default=64, help="validation images (default 64)")
    s.add_argument("--imgsz", type=int, default=160, help="image side in pixels (default 160)")
    s.add_argument("--seed", type=int, default=0, help="seed; the same seed gives identical files")
    s.add_argument("--classes", type=int, default=1, help="number of classes (default 1)")
    s.add_argument("--overwrite", action="store_true", help="replace a dataset previously written there")
    s.set_defaults(func=run_synth)
    c = data_sub.add_parser("check", help="check a YOLO dataset yaml (folders, labels, class ids)")
    c.add_argument("data", help="data yaml")
    c.set_defaults(func=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from modprune.data import generate_dataset

    path = generate_dataset(
        args.out_dir,
        n_train=args.train,
        n_val=args.val,
        imgsz=args.imgsz,
        seed=args.seed,
        n_classes=args.classes,
        overwrite=args.overwrite,
    )
    print(f"wrote {path} ({args.train} train / {args.val} val images at {args.imgsz}px, seed {args.seed})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from modprune.data import check_dataset

    summary = check_dataset(args.data)
    for split, n in summary.images.items():
        print(f"{split}: {n} images, {summary.objects.get(split, 0)} objects")
    print(f"classes ({summary.nc}): {', '.join(summary.names)}")
    return 0
