"""``modprune sensitivity MODEL --data D [--by category|layer] [--ratios 0.1,0.2] -o OUT.json [--plot OUT.png]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modprune.cli.commands._proxy import add_proxy_args, base_config, input_paths, set_threads


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensitivity", help="prune each category (or layer) alone over a grid of ratios and score "
                                           "a fast proxy (validation loss, mAP50) without fine-tuning")
    add_proxy_args(p)
    p.add_argument("--by", choices=("category", "layer"), default="category",
                   help="prune one category or one convolution / linear layer at a time (default category)")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7",
                   help="comma-separated fractions of the unit's output channels to remove (default 0.1,...,0.7)")
    p.add_argument("--unit", action="append", default=[], metavar="NAME",
                   help="only this category or layer (repeatable; default: every prunable one)")
    p.add_argument("-o", "--output", required=True, help="where to write the results (JSON)")
    p.add_argument("--plot", help="also draw ratio against metric per unit here (PNG; needs matplotlib)")
    p.add_argument("--force", action="store_true", help="allow the outputs to replace existing files")
    p.set_defaults(func=run)


def _ratios(text: str) -> list[float]:
    from modprune.exceptions import ConfigError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--ratios {text!r} must be comma-separated numbers in (0, 1), e.g. 0.1,0.3,0.5",
                          text) from None


def run(args: argparse.Namespace) -> int:
    from modprune.cli.common import check_output, example_input, load_model
    from modprune.exceptions import OutputPathError
    from modprune.integrations.ultralytics.proxy import ProxyScorer
    from modprune.optional import require
    from modprune.outputs import same_path, staged_outputs
    from modprune.workflows.sensitivity import sensitivity

    ratios, config = _ratios(args.ratios), base_config(args)
    inputs = input_paths(args)
    out = check_output(args.output, inputs, force=args.force)
    if args.plot:
        require("matplotlib", "modprune sensitivity --plot")
        if same_path(args.plot, out):
            raise OutputPathError(f"--plot {args.plot!r} is the JSON output; choose another path", args.plot)
        check_output(args.plot, inputs, force=args.force)
    set_threads(args)
    model = load_model(args)
    with ProxyScorer(args.data, imgsz=args.imgsz, subset=args.subset, batch=args.batch,
                     calibrate_batches=args.calibrate_batches) as score:
        result = sensitivity(model, score, example_input(args.imgsz), by=args.by, ratios=ratios,
                             units=args.unit or None, config=config, progress=lambda m: print(m, file=sys.stderr))
    with staged_outputs() as stage:  # the JSON and the plot land together or not at all
        stage.file(out).write_text(result.to_json())
        if args.plot:
            result.plot(stage.file(args.plot), fmt=Path(args.plot).suffix.lstrip(".") or "png")
    print(f"{len(result.curves)} {args.by} curves x {len(result.ratios)} ratios in {result.seconds:.1f} s")
    print(f"wrote {out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
