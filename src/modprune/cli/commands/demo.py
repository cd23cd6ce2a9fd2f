"""``modprune demo [--quick] [--out DIR]``: the end-to-end demo (see modprune.workflows.demo)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on synthetic data: train, prune two ways, fine-tune, compare")
    p.add_argument("--quick", action="store_true", help="a much smaller run for a first look (a few minutes)")
    p.add_argument("--out", default="demo-output", help="output directory (default demo-output)")
    p.add_argument("--epochs", type=int, help="override the base model's training epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune.outputs import check_output, disk_error
    from modprune.workflows.demo import FULL, QUICK, run_demo

    settings = QUICK if args.quick else FULL
    if args.epochs is not None:
        settings = dataclasses.replace(settings, train_epochs=args.epochs)
    out = check_output(args.out, directory=True)
    created = not out.exists()
    try:
        run_demo(out, settings, say=print)
    except BaseException as exc:
        if created and (isinstance(exc, OSError) or disk_error(exc) is not None):  # a full or read-only disk
            shutil.rmtree(out, ignore_errors=True)
        if (disk := disk_error(exc, out)) is not None and disk is not exc:
            raise disk from exc
        raise
    return 0
