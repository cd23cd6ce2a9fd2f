"""``modprune compare BASE OTHER... [--data D] [--imgsz N] [--json F] [--report DIR] [--thin-baseline EPOCHS]``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("modprune.cli.compare")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare a base model with pruned ones: size, MACs, latency, mAP")
    p.add_argument("models", nargs="+", metavar="MODEL", help="base model first, then the others")
    p.add_argument("--data", help="dataset yaml: adds mAP50 and mAP50-95 (ultralytics validator)")
    p.add_argument("--imgsz", type=int, default=640, help="latency/MACs input size (default 640)")
    p.add_argument("--val-imgsz", type=int, help="validation image size (default: --imgsz)")
    p.add_argument("--batch", type=int, default=1, help="latency batch size (default 1)")
    p.add_argument("--threads", type=int, default=2, help="threads for PyTorch and ONNX Runtime (default 2)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime timing")
    p.add_argument("--int8", action="store_true", help="add an ONNX Runtime INT8 row per model (needs --data)")
    p.add_argument("--calib-images", type=int, default=64, help="INT8 calibration images (default 64)")
    p.add_argument("--json", dest="json_out", help="write the raw results as JSON here")
    p.add_argument("--report", help="write report.md, report.json and plots into this directory")
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints that need arbitrary pickle code")
    p.add_argument("--thin-baseline", type=int, metavar="EPOCHS", help="add the natively thin model with the MACs of "
                   "--thin-match, trained from scratch for EPOCHS (base + fine-tune epochs) on --data")
    p.add_argument("--thin-yaml", metavar="YAML", help="the thin model's architecture (default: the base's model yaml)")
    p.add_argument("--thin-match", metavar="MODEL", help="the model whose MACs the thin one matches (default: the "
                   "second MODEL)")
    p.add_argument("--thin-batch", type=int, default=16, help="thin model's training batch size (default 16)")
    p.add_argument("--thin-nominal-batch", type=int, metavar="N", help="images per optimizer step of the thin "
                   "model's training (default: ultralytics' 64); set it as the base and its fine-tuning were trained, "
                   "or the comparison is not fair")
    p.add_argument("--thin-out", default="thin-baseline", help="where the thin yaml, training run and thin.pt go "
                   "(default thin-baseline)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune import api
    from modprune.cli.common import check_output
    from modprune.evaluate.compare import CompareOptions, compare_models
    from modprune.evaluate.report import comparison_table, write_report
    from modprune.exceptions import OutputPathError
    from modprune.outputs import is_within, staged_outputs
    from modprune.report import category_table
    from modprune.serialization import load

    options = CompareOptions(
        imgsz=args.imgsz, batch=args.batch, threads=args.threads, rounds=args.rounds, onnx=not args.no_onnx,
        data=args.data, val_imgsz=args.val_imgsz, int8=args.int8, calibration_images=args.calib_images,
    )
    inputs = list(args.models)
    if args.data:
        from modprune.data import check_dataset

        inputs += [args.data, check_dataset(args.data).root]
    if args.json_out:
        check_output(args.json_out, inputs, force=False)
    if args.report:
        check_output(args.report, inputs, force=True, directory=True)
        if args.json_out and is_within(args.json_out, args.report):
            raise OutputPathError(f"--json {args.json_out!r} is inside the --report directory; write it elsewhere",
                                  args.json_out)
    models, paths = {}, {}
    for i, path in enumerate(args.models, 1):
        name = path if path not in models else f"{path}#{len(models)}"
        log.info("[load %d/%d] %s", i, len(args.models), path)
        models[name] = load(path, trust_pickle=args.trust_pickle).float()
        paths[name] = path
    if args.thin_baseline is not None:
        _add_thin(args, models, paths, inputs)
    result = compare_models(models, paths=paths, options=options)  # progress: INFO lines (-q silences them)
    print(comparison_table(result, markdown=False))
    with staged_outputs() as stage:  # the JSON and the report directory land together or not at all
        if args.json_out:
            stage.file(args.json_out).write_text(json.dumps(result, indent=2, default=str))
        if args.report:
            cats = {n: category_table(m, api.categorize(m)) for n, m in models.items()}
            write_report(result, stage.dir(args.report), categories=cats)
    if args.json_out:
        print(f"wrote {args.json_out}")
    if args.report:
        print(f"wrote {Path(args.report) / 'report.md'}")
    return 0


def _add_thin(args: argparse.Namespace, models: dict, paths: dict, inputs: list) -> None:
    """Train the thin baseline (``--thin-baseline``) and add it as the last model."""
    from modprune.cli.common import check_output
    from modprune.exceptions import ConfigError
    from modprune.serialization import save
    from modprune.workflows.thin_baseline import thin_baseline

    if not args.data:
        raise ConfigError("--thin-baseline trains a model: pass --data (the dataset yaml it trains on)", None)
    names = list(models)
    match = args.thin_match or (args.models[1] if len(args.models) > 1 else None)
    if match is None or match not in models:
        raise ConfigError(f"--thin-match {match!r}: name one of the MODELs ({', '.join(names)}); with one MODEL "
                          "pass --thin-match", match)
    out = check_output(args.thin_out, inputs, force=True, directory=True)
    imgsz = args.val_imgsz or args.imgsz
    log.info("[thin] matching %s's MACs at %dpx, training %d epochs from scratch", match, imgsz, args.thin_baseline)
    thin, found = thin_baseline(args.thin_yaml or models[names[0]], models[match], args.data, out,
                                epochs=args.thin_baseline, imgsz=imgsz, batch=args.thin_batch,
                                finetune_overrides={"nominal_batch": args.thin_nominal_batch})
    name = f"thin w={found.width:.4f} ({args.thin_baseline} ep scratch)"
    save(thin, Path(out) / "thin.pt", metadata={"thin_baseline": found.to_dict(), "epochs": args.thin_baseline})
    log.info("[thin] width %.4f: %d MACs vs %d (%+.2f%%); saved %s", found.width, found.macs, found.target_macs,
             100 * found.relative_error, Path(out) / "thin.pt")
    models[name], paths[name] = thin, str(Path(out) / "thin.pt")
