"""``modprune demo [--demo NAME] [--list] [--quick] [--out DIR] [--epochs N] [--seeds 0,1,2]
[--thin-baseline] [--nominal-batch N]``: the end-to-end demo
(see modprune.workflows.demo). Plugins offer demos through ``modprune_register_demos``."""

from __future__ import annotations

import argparse
import dataclasses
import shutil


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on synthetic data: train, prune two ways, fine-tune, compare")
    p.add_argument("--demo", metavar="NAME", help="which demo (default: the first a plugin offers; see --list)")
    p.add_argument("--list", action="store_true", help="list the demos available and exit")
    p.add_argument("--quick", action="store_true", help="a much smaller run for a first look (a few minutes)")
    p.add_argument("--out", default="demo-output", help="output directory (default demo-output)")
    p.add_argument("--epochs", type=int, help="override the base model's training epochs")
    p.add_argument("--seeds", metavar="S,S,...", help="run the protocol once per seed (e.g. 0,1,2) and report "
                   "mean and spread; each seed writes OUT/seed-N")
    p.add_argument("--thin-baseline", action="store_true", help="add the natively thin model at the structured "
                   "model's MACs, trained from scratch for base + fine-tune epochs (about the base training's cost "
                   "again)")
    p.add_argument("--nominal-batch", type=int, metavar="N", help="images per optimizer step of the base, the "
                   "fine-tuning and the thin model (default: the demo's, one step per batch; 64 is ultralytics' "
                   "default, four batches of 16 a step)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune.outputs import check_output, disk_error
    from modprune.optional import require
    from modprune.workflows.demo import available_demos, run_demo, select_demo

    if args.list:
        for i, (name, spec) in enumerate(available_demos().items()):
            default = " (default)" if i == 0 else ""
            print(f"{name}{default}: {spec.model_name}, recipes {spec.unstructured_recipe} and "
                  f"{spec.structured_recipe}{'; ' + spec.description if spec.description else ''}")
        return 0
    require("ultralytics", "modprune demo (it trains and validates with ultralytics)")
    spec = select_demo(args.demo)
    settings = spec.quick if args.quick else spec.full
    if args.epochs is not None:
        settings = dataclasses.replace(settings, train_epochs=args.epochs)
    if args.thin_baseline:
        settings = dataclasses.replace(settings, thin_baseline=True)
    if args.nominal_batch is not None:
        settings = dataclasses.replace(settings, nominal_batch=args.nominal_batch)
    out = check_output(args.out, directory=True)
    created = not out.exists()
    try:
        if args.seeds is not None:
            from modprune.workflows.seeds import parse_seeds, run_demo_seeds

            run_demo_seeds(out, settings, parse_seeds(args.seeds), demo=spec, say=print)
        else:
            run_demo(out, settings, demo=spec, say=print)
    except BaseException as exc:
        if created and (isinstance(exc, OSError) or disk_error(exc) is not None):  # a full or read-only disk
            shutil.rmtree(out, ignore_errors=True)
        if (disk := disk_error(exc, out)) is not None and disk is not exc:
            raise disk from exc
        raise
    return 0
