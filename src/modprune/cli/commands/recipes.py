"""``modprune recipes``: registered recipes with their descriptions."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list recipes (or show one with --show NAME)")
    p.add_argument("--show", metavar="NAME", help="print one recipe as YAML")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune import api
    from modprune.exceptions import ModpruneError

    if args.show:
        print(api.get_recipe(args.show).to_yaml(), end="")
        return 0
    for name in api.list_recipes():
        recipe = api.get_recipe(name)
        try:
            c = api.resolve_config(recipe.config)  # target_kind as the pruner resolves it
        except ModpruneError:  # e.g. the plugin with its pruner is not installed
            c = recipe.config
        print(f"{name}: {c.method}, target {c.target} ({c.target_kind}), importance {c.importance}")
        if recipe.description:
            print(f"    {recipe.description}")
    return 0
