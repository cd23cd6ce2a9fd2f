"""``modprune search MODEL --data D --budget macs=0.4 [--trials N] [--storage URL] [--study NAME] -o recipe.yaml``.

The study lives in SQLite next to the output by default (``recipe.optuna.db`` for ``recipe.yaml``), so running
the same command again resumes it; ``--storage URL`` shares one study between many workers.

``--proxy-epochs N`` fine-tunes every trial's pruned model N epochs before scoring it
(:class:`~modprune.integrations.ultralytics.proxy.RecoveryScorer`), with the base recipe's ``finetune``
settings. The written recipe carries the base recipe's ``finetune`` section on (with ``--proxy-nominal-batch``
over it), for the fine-tuning after ``modprune prune --recipe``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from modprune.cli.commands._proxy import add_proxy_args, base_config, input_paths, set_threads
from modprune.cli.common import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search per-category ratios that meet a budget and maximise a fast proxy "
                                      "(Optuna), and write the best as a recipe")
    add_proxy_args(p)
    p.add_argument("--budget", required=True, metavar="KIND=FRACTION",
                   help="what the pruned model must lose, e.g. macs=0.4, params=0.5 or latency=0.5")
    p.add_argument("--tolerance", type=float, default=None,
                   help="how far a trial's measured reduction may be from the budget (default 0.01; 0.02 for latency)")
    p.add_argument("--prune-imgsz", type=positive_int, metavar="N",
                   help="input size each trial prunes, counts MACs and times latency at (default --imgsz); e.g. "
                        "640 for a latency budget at the deployed size while the proxy validates at --imgsz")
    p.add_argument("--trials", type=positive_int, default=20, help="trials this run adds to the study (default 20)")
    p.add_argument("--objective", default="mAP50",
                   help="proxy metric to optimise: mAP50 (default), mAP50-95, or val_loss (minimised)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna RDB storage shared by workers, e.g. sqlite:///s.db or postgresql://user@host/db "
                        "(default: sqlite next to the output)")
    p.add_argument("--study", default="modprune-search", help="study name in the storage (default modprune-search)")
    p.add_argument("--seed", type=int, help="sampler seed (default random; give each parallel worker its own)")
    p.add_argument("--category", action="append", default=[], metavar="NAME",
                   help="search only this category's ratio (repeatable; default every prunable one; others stay 0)")
    g = p.add_argument_group("recovery proxy (fine-tune each trial before scoring it)")
    g.add_argument("--proxy-epochs", type=int, default=0, metavar="N",
                   help="fine-tune every trial's pruned model N epochs on the training split before scoring it "
                        "(default 0: score it as pruned); uses the --recipe's finetune settings")
    g.add_argument("--proxy-distill", action="store_true",
                   help="distil the proxy fine-tuning from the unpruned model (head outputs)")
    g.add_argument("--proxy-nominal-batch", type=positive_int, metavar="N",
                   help="images per optimizer step of the proxy fine-tuning (default: the recipe's, else "
                        "ultralytics' 64)")
    p.add_argument("-o", "--output", required=True, help="where to write the best recipe (YAML)")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.set_defaults(func=run)


def default_storage(output: Path) -> str:
    """``sqlite:///DIR/NAME.optuna.db`` next to ``output``."""
    return f"sqlite:///{output.resolve().with_name(output.stem + '.optuna.db')}"


def _finetune_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The base recipe's ``finetune`` section, with ``--proxy-nominal-batch`` over it."""
    from modprune import api

    settings = dict(api.find_recipe(args.recipe).finetune) if args.recipe else {}
    if args.proxy_nominal_batch is not None:
        settings["nominal_batch"] = args.proxy_nominal_batch
    return settings


def _check_proxy_args(args: argparse.Namespace) -> None:
    from modprune.exceptions import ConfigError

    if args.proxy_epochs < 0:
        raise ConfigError(f"--proxy-epochs must be 0 or more, got {args.proxy_epochs}", args.proxy_epochs)
    given = [flag for flag, on in (("--proxy-distill", args.proxy_distill),
                                   ("--proxy-nominal-batch", args.proxy_nominal_batch is not None)) if on]
    if given and not args.proxy_epochs:
        raise ConfigError(f"{' and '.join(given)} need --proxy-epochs N (N >= 1)", given)


def _proxy_description(args: argparse.Namespace, settings: dict[str, Any]) -> str:
    """How the trials are scored, kept with the study (a resumed study must score the same way)."""
    what = (f"{args.objective} on {args.subset} validation images at {args.imgsz} px, "
            f"BatchNorm recalibration {args.calibrate_batches} batches")
    if not args.proxy_epochs:
        return what
    text = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    return (f"{what}, after {args.proxy_epochs} fine-tuning epoch(s)"
            f"{' distilled' if args.proxy_distill else ''}{' (' + text + ')' if text else ''}")


def _scorer(args: argparse.Namespace, model: Any, settings: dict[str, Any], run_dir: Path, stack: ExitStack) -> Any:
    """The proxy: a :class:`ProxyScorer`, fine-tuning each model first with ``--proxy-epochs``."""
    from modprune.integrations.ultralytics.proxy import ProxyScorer, RecoveryScorer

    score = stack.enter_context(ProxyScorer(args.data, imgsz=args.imgsz, subset=args.subset, batch=args.batch,
                                            calibrate_batches=args.calibrate_batches))
    if not args.proxy_epochs:
        return score
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

    options = FinetuneOptions(epochs=args.proxy_epochs, imgsz=args.imgsz, batch=args.batch, project_dir=run_dir,
                              name="proxy-finetune", **settings)
    return RecoveryScorer(score, args.data, options, teacher=model if args.proxy_distill else None)


def run(args: argparse.Namespace) -> int:
    from modprune.api import resolve_config
    from modprune.cli.common import check_output, example_input, load_model
    from modprune.optional import require
    from modprune.workflows.search import Budget, search

    require("optuna", "modprune search")
    budget = Budget.parse(args.budget, tolerance=args.tolerance)
    _check_proxy_args(args)
    config = base_config(args)
    out = check_output(args.output, input_paths(args), force=args.force)
    storage = args.storage or default_storage(out)
    set_threads(args)
    model = load_model(args)
    settings = _finetune_settings(args)  # the recipe's finetune section, read once
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modprune-search-")))
        score = _scorer(args, model, settings, run_dir, stack)
        result = search(model, score, example_input(args.prune_imgsz or args.imgsz), budget=budget, objective=args.objective,
                        trials=args.trials, storage=storage, study_name=args.study, config=config,
                        categories=args.category or None, seed=args.seed, proxy=_proxy_description(args, settings),
                        progress=lambda m: print(m, file=sys.stderr))
    proxy = f"after {args.proxy_epochs} fine-tuning epoch(s)" if args.proxy_epochs else "without fine-tuning"
    recipe = result.recipe(out.stem, finetune=settings, proxy=proxy)
    resolve_config(recipe.config)  # what `modprune prune --recipe` will check
    from modprune.serialization import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(recipe.to_yaml(), encoding="utf-8")
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in result.config.category_ratios.items())
    print(f"best: trial {result.trial} of {result.complete} finished ({result.infeasible} infeasible), "
          f"{result.objective} {result.value:.4f}, {budget.kind} -{result.achieved:.4f}; ratios {ratios}")
    print(f"study {args.study!r} in {storage}")
    print(f"wrote {out}")
    return 0
