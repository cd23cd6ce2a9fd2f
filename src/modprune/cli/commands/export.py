"""``modprune export MODEL --format onnx|openvino|torchscript [--int8 --data D] [--imgsz N] -o OUT``.

ultralytics models are exported through ultralytics' own exporter (the file ``yolo export`` gives);
the result runs with ``ultralytics.YOLO(OUT)`` where modprune is not installed.
"""

from __future__ import annotations

import argparse

from modprune.cli.common import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    from modprune.evaluate.export import DEFAULT_CALIBRATION_IMAGES, EXPORT_FORMATS

    p = sub.add_parser("export", help="export a (pruned) model for deployment: onnx, openvino, torchscript, INT8")
    p.add_argument("model", help="ultralytics checkpoint (.pt), modprune file, or ultralytics model yaml")
    p.add_argument("--format", default="onnx", help=f"one of {', '.join(EXPORT_FORMATS)} (default onnx)")
    p.add_argument("--imgsz", type=positive_int, default=640, help="square input size (default 640)")
    p.add_argument("--int8", action="store_true", help="static INT8 quantisation calibrated on --data")
    p.add_argument("--data", help="dataset yaml whose training images calibrate INT8")
    p.add_argument("--calib-images", type=positive_int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"calibration images for ONNX INT8 (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("-o", "--output", required=True,
                   help="output file (*.onnx, *.torchscript) or folder (*_openvino_model)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints that need arbitrary pickle code")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune.cli.common import same_file
    from modprune.evaluate.export import check_export_args, export_model
    from modprune.exceptions import OutputPathError
    from modprune.serialization import load

    if same_file(args.output, args.model):
        raise OutputPathError(f"output {args.output!r} is the input model; choose another path", args.output)
    from pathlib import Path

    check_export_args(args.format, Path(args.output).expanduser(), args.int8, args.data, args.imgsz, args.calib_images,
                args.force)  # fail before the (slow) model load
    model = load(args.model, trust_pickle=args.trust_pickle).float()
    result = export_model(model, args.output, format=args.format, imgsz=args.imgsz, int8=args.int8, data=args.data,
                          calibration_images=args.calib_images, overwrite=args.force)
    kind = f"{result.format}{' int8' if result.int8 else ''}"
    calib = f", {result.calibration_images} calibration images" if result.calibration_images else ""
    print(f"wrote {result.path} ({kind}, {result.size_bytes / 1e6:.1f} MB, {result.exporter} exporter{calib}, "
          f"{result.seconds:.1f} s)")
    return 0
