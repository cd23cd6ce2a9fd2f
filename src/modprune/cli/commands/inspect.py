"""``modprune inspect MODEL``: parameters, MACs and the category table."""

from __future__ import annotations

import argparse
from collections import Counter

from modprune.cli.common import add_model_args, example_input, load_model, render_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a model's categories, parameters and MACs")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune import api
    from modprune.measure import MAC_COUNTER, count_macs, count_nonzero, count_params
    from modprune.report import category_table

    model = load_model(args)
    categories = api.categorize(model)
    table = category_table(model, categories)
    modules = Counter(categories.modules.values())
    total = count_params(model)
    rows = [
        (cat, modules.get(cat, 0), f"{p:,}", f"{100 * p / total if total else 0:.1f}%", f"{1 - nz / p if p else 0:.2%}")
        for cat, (p, nz) in sorted(table.items())
    ]
    print(render_table(("category", "modules", "params", "share", "zeros"), rows))
    try:
        macs = f"{count_macs(model, example_input(args.imgsz)) / 1e9:.3f} G ({MAC_COUNTER})"
    except Exception as exc:  # a model that does not take a 3-channel square image: still inspectable
        macs = f"n/a (forward on a 1x3x{args.imgsz}x{args.imgsz} input failed: {type(exc).__name__})"
    print(f"\nparams {total:,}  nonzero {count_nonzero(model):,}  MACs@{args.imgsz} {macs}")
    return 0
