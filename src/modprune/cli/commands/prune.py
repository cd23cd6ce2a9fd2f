"""``modprune prune MODEL --recipe NAME|PATH [--target X] -o OUT``."""

from __future__ import annotations

import argparse
import dataclasses
import json

from modprune.cli.common import add_model_args, check_output, example_input, load_model, same_file
from modprune.exceptions import OutputPathError

#: ``--calibrate``: batches of images used to re-estimate BatchNorm statistics.
CALIBRATE_BATCHES, CALIBRATE_BATCH = 32, 8


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model with a recipe and save it")
    add_model_args(p)
    p.add_argument("--recipe", required=True, help="recipe name (see `modprune recipes`) or YAML file")
    p.add_argument("--target", type=float, help="override the recipe's target fraction")
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    p.add_argument("--report-json", help="also write the prune report as JSON here")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.add_argument("--calibrate", metavar="DIR",
                   help="after pruning, re-estimate BatchNorm statistics on the images in DIR (unlabelled; "
                        f"at most {CALIBRATE_BATCHES * CALIBRATE_BATCH} images at --imgsz)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune import api
    from modprune.serialization import atomic_path, save

    config = api.load_recipe(args.recipe)
    if args.target is not None:
        config = dataclasses.replace(config, target=args.target)
    out = check_output(args.output, [args.model], force=args.force)
    if args.report_json:
        if same_file(args.report_json, out):
            raise OutputPathError(f"--report-json {args.report_json!r} is the model output; choose another path",
                                  args.report_json)
        check_output(args.report_json, [args.model], force=args.force)
    if args.calibrate:
        from modprune.calibrate import image_files

        image_files(args.calibrate)  # a missing or empty folder fails before any work
    model = load_model(args)
    report = api.prune(model, config, example_inputs=example_input(args.imgsz))
    if args.calibrate:
        from modprune.calibrate import calibrate_batchnorm, image_batches

        calibrate_batchnorm(model, image_batches(args.calibrate, args.imgsz, CALIBRATE_BATCH), batches=CALIBRATE_BATCHES)
    meta = {"recipe": str(args.recipe), "config": report.config, "report_digest": report.digest(),
            "bn_calibration": args.calibrate}
    save(model, out, metadata=meta)
    if args.report_json:
        with atomic_path(args.report_json) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2))
    print(report.to_markdown())
    print(f"\nwrote {out}")
    return 0
