"""``modprune search MODEL --data D --budget macs=0.4 [--trials N] [--storage URL] [--study NAME] -o recipe.yaml``.

The study lives in SQLite next to the output by default (``recipe.optuna.db`` for ``recipe.yaml``), so running
the same command again resumes it; ``--storage URL`` shares one study between many workers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    p.add_argument("-o", "--output", required=True, help="where to write the best recipe (YAML)")
    p.add_argument("--force", action="store_true", help="allow the output to replace an existing file")
    p.set_defaults(func=run)


def default_storage(output: Path) -> str:
    """``sqlite:///DIR/NAME.optuna.db`` next to ``output``."""
    return f"sqlite:///{output.resolve().with_name(output.stem + '.optuna.db')}"


def run(args: argparse.Namespace) -> int:
    from modprune.api import resolve_config
    from modprune.cli.common import check_output, example_input, load_model
    from modprune.integrations.ultralytics.proxy import ProxyScorer
    from modprune.optional import require
    from modprune.workflows.search import Budget, search

    require("optuna", "modprune search")
    budget = Budget.parse(args.budget, tolerance=args.tolerance)
    config = base_config(args)
    out = check_output(args.output, input_paths(args), force=args.force)
    storage = args.storage or default_storage(out)
    set_threads(args)
    model = load_model(args)
    with ProxyScorer(args.data, imgsz=args.imgsz, subset=args.subset, batch=args.batch,
                     calibrate_batches=args.calibrate_batches) as score:
        result = search(model, score, example_input(args.prune_imgsz or args.imgsz), budget=budget, objective=args.objective,
                        trials=args.trials, storage=storage, study_name=args.study, config=config,
                        categories=args.category or None, seed=args.seed,
                        progress=lambda m: print(m, file=sys.stderr))
    recipe = result.recipe(out.stem)
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
