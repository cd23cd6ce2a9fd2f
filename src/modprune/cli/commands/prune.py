"""``modprune prune MODEL --recipe NAME|PATH [--target X] -o OUT``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from modprune.cli.common import add_model_args, check_output, example_input, load_model, same_file
from modprune.exceptions import ConfigError, OutputPathError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model with a recipe and save it")
    add_model_args(p)
    p.add_argument("--recipe", required=True, help="recipe name (see `modprune recipes`) or YAML file")
    p.add_argument("--target", type=float, help="override the recipe's target fraction")
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    p.add_argument("--report-json", help="also write the prune report as JSON here")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.add_argument("--portable", action="store_true",
                   help="keep the two halves of C2f-like blocks equal, so the checkpoint uses ultralytics' classes "
                        "only and loads where modprune is not installed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune import api
    from modprune.outputs import staged_outputs
    from modprune.serialization import save

    config = api.load_recipe(args.recipe)
    if args.target is not None:
        config = dataclasses.replace(config, target=args.target)
    inputs = [args.model] + ([args.recipe] if os.path.exists(args.recipe) else [])
    out = check_output(args.output, inputs, force=args.force)
    if args.report_json:
        if same_file(args.report_json, out):
            raise OutputPathError(f"--report-json {args.report_json!r} is the model output; choose another path",
                                  args.report_json)
        check_output(args.report_json, inputs, force=args.force)
    model = load_model(args)
    report = api.prune(model, config, example_inputs=example_input(args.imgsz))
    if args.portable:
        _equalize(model, args.imgsz)
    meta = {"recipe": str(args.recipe), "config": report.config, "report_digest": report.digest()}
    with staged_outputs() as stage:  # the model and the report land together or not at all
        save(model, stage.file(out), metadata=meta)
        if args.report_json:
            stage.file(args.report_json).write_text(json.dumps(report.to_dict(), indent=2))
    print(report.to_markdown())
    print(f"\nwrote {out}")
    return 0


def _equalize(model, imgsz: int) -> None:
    """The portable-checkpoint constraint: equal halves in every split block (ultralytics models only)."""
    from modprune.integrations.ultralytics.checkpoint import is_ultralytics_model
    from modprune.integrations.ultralytics.portable import equalize_split_widths

    if not is_ultralytics_model(model):
        raise ConfigError("--portable applies to ultralytics models; this model is saved with modprune's format",
                          type(model).__name__)
    changed = equalize_split_widths(model, example_input(imgsz))
    if changed:
        print(f"--portable: equalised the halves of {len(changed)} blocks ({', '.join(changed)})")
