"""``modprune prune MODEL --recipe NAME|PATH [--target X] -o OUT``."""

from __future__ import annotations

import argparse
import dataclasses
import json

from modprune.cli.common import add_model_args, check_output, example_input, load_model, same_file
from modprune.exceptions import OutputPathError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model with a recipe and save it")
    add_model_args(p)
    p.add_argument("--recipe", required=True, help="recipe name (see `modprune recipes`) or YAML file")
    p.add_argument("--target", type=float, help="override the recipe's target fraction")
    p.add_argument(
        "--protect-module",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this module (qualified name or glob pattern, e.g. 'roi_heads.*') untouched; repeatable",
    )
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    p.add_argument("--report-json", help="also write the prune report as JSON here")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune import api
    from modprune.serialization import atomic_path, save

    config = api.load_recipe(args.recipe)
    if args.target is not None:
        config = dataclasses.replace(config, target=args.target)
    if args.protect_module:
        config = dataclasses.replace(config, protect_modules=config.protect_modules + tuple(args.protect_module))
    out = check_output(args.output, [args.model], force=args.force)
    if args.report_json:
        if same_file(args.report_json, out):
            raise OutputPathError(f"--report-json {args.report_json!r} is the model output; choose another path",
                                  args.report_json)
        check_output(args.report_json, [args.model], force=args.force)
    model = load_model(args)
    report = api.prune(model, config, example_inputs=example_input(args.imgsz))
    meta = {"recipe": str(args.recipe), "config": report.config, "report_digest": report.digest()}
    save(model, out, metadata=meta)
    if args.report_json:
        with atomic_path(args.report_json) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2))
    print(report.to_markdown())
    print(f"\nwrote {out}")
    return 0
