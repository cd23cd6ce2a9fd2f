"""``modprune demo [--demo NAME] [--list] [--quick] [--out DIR] [--epochs N]``: the end-to-end demo
(see modprune.workflows.demo). Plugins offer demos through ``modprune_register_demos``."""

from __future__ import annotations

import argparse
import dataclasses


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on synthetic data: train, prune two ways, fine-tune, compare")
    p.add_argument("--demo", metavar="NAME", help="which demo (default: the first a plugin offers; see --list)")
    p.add_argument("--list", action="store_true", help="list the demos available and exit")
    p.add_argument("--quick", action="store_true", help="a much smaller run for a first look (a few minutes)")
    p.add_argument("--out", default="demo-output", help="output directory (default demo-output)")
    p.add_argument("--epochs", type=int, help="override the base model's training epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    run_demo(args.out, settings, demo=spec, say=print)
    return 0
