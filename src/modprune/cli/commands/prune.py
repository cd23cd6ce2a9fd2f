"""``modprune prune MODEL --recipe NAME|PATH [--target X] -o OUT``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Mapping

from modprune.cli.common import add_model_args, check_output, example_input, load_model, positive_int, same_file
from modprune.exceptions import ConfigError, OutputPathError

if TYPE_CHECKING:  # pragma: no cover
    from modprune.config import PruneConfig

#: ``--calibrate``: batches of images used to re-estimate BatchNorm statistics.
CALIBRATE_BATCHES, CALIBRATE_BATCH = 32, 8


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
    p.add_argument("-o", "--output", help="where to write the pruned model (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the per-layer plan (widths and MACs before -> after) and write nothing")
    p.add_argument("--report-json", help="also write the prune report as JSON here")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.add_argument("--portable", action="store_true",
                   help="keep the two halves of C2f-like blocks equal, so the checkpoint uses ultralytics' classes "
                        "only and loads where modprune is not installed (the structured pruner option "
                        "pruner_options: {portable: true})")
    _add_iterative_args(p)
    p.add_argument("--calibrate", metavar="DIR",
                   help="after pruning, re-estimate BatchNorm statistics on the images in DIR (unlabelled; "
                        f"at most {CALIBRATE_BATCHES * CALIBRATE_BATCH} images at --imgsz)")
    p.set_defaults(func=run)


def _add_iterative_args(p: argparse.ArgumentParser) -> None:
    """Iterative pruning with recovery (prune -> fine-tune, K steps); see modprune.workflows.iterative."""
    from modprune.workflows.iterative import SCHEDULES

    g = p.add_argument_group("iterative pruning with fine-tuning")
    g.add_argument("--steps", type=positive_int, default=1, help="prune in this many steps (default 1)")
    g.add_argument("--schedule", choices=SCHEDULES, default="linear",
                   help="how the cumulative target grows over --steps: linear (equal cuts, default) or cubic "
                        "(Zhu & Gupta's gradual schedule, large cuts first)")
    g.add_argument("--data", help="dataset yaml: fine-tune after every step (needs --finetune-epochs)")
    g.add_argument("--finetune-epochs", type=epochs_per_step, metavar="N|E1,E2,...",
                   help="fine-tuning epochs after each step, or one count per step (e.g. 1,1,1,5 with --steps 4: "
                        "most of the budget after the last cut; 0 prunes only)")
    g.add_argument("--finetune-batch", type=positive_int, default=16, help="fine-tuning batch size (default 16)")
    g.add_argument("--distill", action="store_true", help="distil from the original (unpruned) model")
    g.add_argument("--distill-mode", choices=("output", "feature", "both"), default="output",
                   help="what --distill matches: head outputs, neck feature maps, or both (default output)")
    g.add_argument("--finetune-optimizer", help="ultralytics optimizer of the fine-tuning (default: the recipe's, "
                                                "else auto)")
    g.add_argument("--finetune-lr0", type=float, help="initial learning rate of the fine-tuning (default: the "
                                                      "recipe's, else ultralytics')")
    g.add_argument("--finetune-nominal-batch", type=positive_int,
                   help="images per optimizer step of the fine-tuning (default: the recipe's, else ultralytics' 64)")
    g.add_argument("--seed", type=int, default=0, help="fine-tuning seed (default 0)")
    g.add_argument("--checkpoint-dir", help="write a checkpoint after every step here (for --resume)")
    g.add_argument("--resume", action="store_true", help="continue the run in --checkpoint-dir after its last step")


def run(args: argparse.Namespace) -> int:
    from modprune import api
    from modprune.outputs import staged_outputs
    from modprune.serialization import save

    recipe = api.find_recipe(args.recipe)
    config = recipe.config
    if args.target is not None:
        config = dataclasses.replace(config, target=args.target)
    if args.protect_module:
        config = dataclasses.replace(config, protect_modules=config.protect_modules + tuple(args.protect_module))
    if args.portable:
        config = _portable(config)
    if args.dry_run:
        return _dry_run(args, config)
    if not args.output:
        raise ConfigError("prune needs -o/--output (where to write the pruned model), or --dry-run", None)
    inputs = [args.model] + ([args.recipe] if os.path.exists(args.recipe) else [])
    inputs += [p for p in (args.data, args.calibrate) if p]
    out = check_output(args.output, inputs, force=args.force)
    if args.report_json:
        if same_file(args.report_json, out):
            raise OutputPathError(f"--report-json {args.report_json!r} is the model output; choose another path",
                                  args.report_json)
        check_output(args.report_json, inputs, force=args.force)
    if args.calibrate:
        from modprune.calibrate import image_files

        image_files(args.calibrate)  # a missing or empty folder fails before any work
    model = load_model(args)
    if _iterative(args):
        return _run_iterative(args, model, config, out, recipe.finetune)
    report = api.prune(model, config, example_inputs=example_input(args.imgsz))
    _calibrate(args, model)
    meta = {"recipe": str(args.recipe), "config": report.config, "report_digest": report.digest(),
            "bn_calibration": args.calibrate}
    with staged_outputs() as stage:  # the model and the report land together or not at all
        save(model, stage.file(out), metadata=meta)
        if args.report_json:
            stage.file(args.report_json).write_text(json.dumps(report.to_dict(), indent=2))
    print(report.to_markdown())
    print(f"\nwrote {out}")
    return 0


def _dry_run(args: argparse.Namespace, config: object) -> int:
    """``--dry-run``: the plan of a prune of an in-memory copy (``--steps`` as the pruner's schedule)."""
    from modprune.cli.dry_run import dry_run

    if args.data or args.checkpoint_dir or args.calibrate or args.portable:
        raise ConfigError("--dry-run prints the plan only: drop --data, --checkpoint-dir, --calibrate and --portable",
                          None)
    if args.steps > 1:
        config = dataclasses.replace(config, steps=args.steps)
    print(dry_run(load_model(args), config, example_input(args.imgsz)))
    return 0


def _calibrate(args: argparse.Namespace, model: object) -> None:
    """``--calibrate DIR``: re-estimate BatchNorm statistics on the images in DIR."""
    if not args.calibrate:
        return
    from modprune.calibrate import calibrate_batchnorm, image_batches

    calibrate_batchnorm(model, image_batches(args.calibrate, args.imgsz, CALIBRATE_BATCH), batches=CALIBRATE_BATCHES)


def epochs_per_step(text: str) -> int | tuple[int, ...]:
    """``--finetune-epochs``: ``"3"`` -> 3 (every step), ``"1,1,1,5"`` -> (1, 1, 1, 5) (one per step)."""
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) == 1:
        return positive_int(parts[0])
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if not values or any(v < 0 for v in values) or not any(values):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer or integers >= 0 separated by "
                                         "commas (one per step, not all 0)")
    return values


def _portable(config: PruneConfig) -> PruneConfig:
    """``--portable``: the structured pruner's ``portable`` option (other methods keep every class anyway)."""
    if config.method != "structured":
        return config
    return dataclasses.replace(config, pruner_options={**config.pruner_options, "portable": True})


def _per_step(args: argparse.Namespace) -> bool:
    return isinstance(args.finetune_epochs, tuple)


def _iterative(args: argparse.Namespace) -> bool:
    """Whether the iterative workflow runs (more than one step, fine-tuning or a checkpoint folder)."""
    from modprune.exceptions import ConfigError

    if (args.data is None) != (args.finetune_epochs is None):
        raise ConfigError("--data and --finetune-epochs go together (fine-tune after every step)", args.data)
    if args.distill and args.data is None:
        raise ConfigError("--distill needs --data and --finetune-epochs", args.distill)
    if args.resume and not args.checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir", args.resume)
    tuning = [flag for flag, value in (("--finetune-optimizer", args.finetune_optimizer),
                                       ("--finetune-lr0", args.finetune_lr0),
                                       ("--finetune-nominal-batch", args.finetune_nominal_batch)) if value is not None]
    if tuning and args.data is None:
        raise ConfigError(f"{' and '.join(tuning)} need --data and --finetune-epochs", tuning)
    return args.steps > 1 or args.data is not None or args.checkpoint_dir is not None


def _run_iterative(args: argparse.Namespace, model: object, config: object, out: object,
                   recipe_finetune: Mapping[str, Any]) -> int:
    import tempfile
    from pathlib import Path

    from modprune.serialization import save
    from modprune.workflows.iterative import prune_iteratively

    with tempfile.TemporaryDirectory(prefix="modprune-iterative-") as tmp:
        options = None
        if args.data is not None:
            from modprune.cli.commands.finetune import optimizer_options
            from modprune.integrations.ultralytics.trainer import FinetuneOptions

            settings = {**recipe_finetune, **optimizer_options(args.finetune_optimizer, args.finetune_lr0)}
            if args.finetune_nominal_batch is not None:
                settings["nominal_batch"] = args.finetune_nominal_batch
            epochs = max(args.finetune_epochs) if _per_step(args) else args.finetune_epochs  # per step: see below
            options = FinetuneOptions(epochs=epochs, imgsz=args.imgsz, batch=args.finetune_batch,
                                      project_dir=Path(args.checkpoint_dir or tmp).resolve() / "runs",
                                      seed=args.seed, distill=args.distill_mode, **settings)
        result = prune_iteratively(model, config, args.data, options, steps=args.steps,
                                   example_inputs=example_input(args.imgsz), distill=args.distill,
                                   checkpoint_dir=args.checkpoint_dir, resume=args.resume, schedule=args.schedule,
                                   step_epochs=list(args.finetune_epochs) if _per_step(args) else None)
    meta = {"recipe": str(args.recipe), "config": config.to_dict(), "iterative": result.to_dict()}
    save(result.model, out, metadata=meta)
    if args.report_json:
        from modprune.serialization import atomic_path

        with atomic_path(args.report_json) as tmp_path:
            tmp_path.write_text(json.dumps(result.to_dict(), indent=2))
    for r in result.steps:
        print(f"step {r.step}/{args.steps}: asked {r.step_target:.4f}, cumulative {r.achieved:.4f} "
              f"(wanted {r.wanted:.4f}){', fine-tuned' if r.finetuned else ''}")
    print(f"\nwrote {out}")
    return 0
