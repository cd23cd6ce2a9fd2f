"""The deployment table: dense fp32, pruned fp32, dense INT8 and pruned INT8, side by side.

Every row is a file users deploy (ultralytics' exporter; INT8 by ONNX Runtime static quantisation,
QDQ with per-channel weights, calibrated on training images of the dataset). Latency: ONNX Runtime,
all four sessions timed in one process, interleaved, fixed thread count (see
modprune.measure.latency); the "vs dense fp32" column is the median of per-round ratios. mAP50 /
mAP50-95: ultralytics' validator running the exported file (``YOLO(file).val``). With ``--openvino``
(and openvino + nncf installed) the same four rows are added for OpenVINO (ultralytics' ``int8=True``
export, NNCF), timed with OpenVINO's runtime at the same thread count.

    python benchmarks/deploy_table.py --base BASE.pt --pruned PRUNED.pt --data data.yaml \
        --imgsz 640 --threads 1 --rounds 20 --calib-images 64 [--openvino] -o deploy_table.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def _ov_runner(folder: Path, threads: int) -> Any:
    import openvino as ov

    core = ov.Core()
    xml = next(folder.glob("*.xml"))
    compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x.numpy()})


def _export_all(models: dict[str, Any], fmt: str, imgsz: int, args: argparse.Namespace, tmp: Path) -> dict[str, Path]:
    """Each model exported fp32 and INT8 at ``imgsz``: ``{"dense fp32": path, ...}``."""
    from modprune.evaluate.export import export_model

    files = {}
    for name, model in models.items():
        for int8 in (False, True):
            key = f"{name} {'INT8' if int8 else 'fp32'}"
            suffix = ".onnx" if fmt == "onnx" else "_openvino_model"
            out = tmp / f"{key.replace(' ', '_')}_{imgsz}{suffix}"
            print(f"[export] {fmt} {key} at {imgsz} px", file=sys.stderr)
            files[key] = export_model(model, out, format=fmt, imgsz=imgsz, int8=int8, data=args.data,
                                      calibration_images=args.calib_images).path
    return files


def _rows(models: dict[str, Any], fmt: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    import torch

    from modprune.evaluate.onnx_export import ort_session
    from modprune.integrations.ultralytics.validate import validate_exported
    from modprune.measure.latency import measure_latency, verdict

    files = _export_all(models, fmt, args.imgsz, args, tmp)
    runners = {k: ort_session(f, args.threads) if fmt == "onnx" else _ov_runner(f, args.threads) for k, f in files.items()}
    val_files = files
    if args.val_imgsz and args.val_imgsz != args.imgsz:  # fixed-size graphs: accuracy from graphs at that size
        val_files = _export_all(models, fmt, args.val_imgsz, args, tmp)
    x = torch.zeros(1, 3, args.imgsz, args.imgsz)
    base = next(iter(files))
    print(f"[latency] {fmt}, {args.rounds} interleaved rounds, {args.threads} thread(s)", file=sys.stderr)
    lat = measure_latency(runners, x, warmup=3, rounds=args.rounds, threads=args.threads, baseline=base)
    rows = []
    for key, path in files.items():
        print(f"[accuracy] {key}", file=sys.stderr)
        acc = validate_exported(val_files[key], args.data, imgsz=args.val_imgsz or args.imgsz)
        ratio = lat["ratios"].get(key)
        rows.append({"runtime": "ONNX Runtime" if fmt == "onnx" else "OpenVINO", "model": key,
                     "median_ms": lat["models"][key]["median_ms"], "p10_ms": lat["models"][key]["p10_ms"],
                     "p90_ms": lat["models"][key]["p90_ms"], "ratio": ratio, "verdict": verdict(ratio) if ratio else "base",
                     "mAP50": acc["mAP50"], "mAP50-95": acc["mAP50-95"], "file_bytes": _size(path),
                     "val_imgsz": args.val_imgsz or args.imgsz, "reliable": lat.get("reliable"),
                     "machine": lat.get("machine")})
    return rows


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| runtime | model | latency ms median [p10-p90] | speedup vs dense fp32 (median [p10-p90]) | verdict | "
            "mAP50 | mAP50-95 | file MB |")
    out = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["ratio"]
        speed = "1.00 (base)" if not ratio else f"{1 / ratio['median']:.2f}x [{1 / ratio['p90']:.2f}-{1 / ratio['p10']:.2f}]"
        out.append(f"| {r['runtime']} | {r['model']} | {r['median_ms']:.1f} [{r['p10_ms']:.1f}-{r['p90_ms']:.1f}] | "
                   f"{speed} | {r['verdict']} | {r['mAP50']:.4f} | {r['mAP50-95']:.4f} | {r['file_bytes'] / 1e6:.2f} |")
    for runtime in dict.fromkeys(r["runtime"] for r in rows):
        machine = next(r["machine"] for r in rows if r["runtime"] == runtime) or {}
        state = "reliable (busy-machine detector quiet)" if machine and not machine.get("busy") else (
            f"unreliable: machine busy ({'; '.join(machine.get('reasons', []))})" if machine else "not checked")
        out.append(f"\n{runtime} timing: {state}; mAP at {rows[0]['val_imgsz']} px.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="dense (trained) model")
    p.add_argument("--pruned", required=True, help="pruned (fine-tuned) model")
    p.add_argument("--data", required=True, help="dataset yaml: INT8 calibration (train) and mAP (val)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--val-imgsz", type=int, help="validation size (default --imgsz); the graphs are fixed-size, so "
                                                 "a different size exports (and calibrates) a second set for mAP")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--openvino", action="store_true", help="also OpenVINO rows (needs openvino and nncf)")
    p.add_argument("--trust-pickle", action="store_true")
    p.add_argument("-o", "--output", help="write the Markdown table here (and the rows as JSON beside it)")
    args = p.parse_args(argv)
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    import modprune

    models = {"dense": modprune.load(args.base, trust_pickle=args.trust_pickle).float().eval(),
              "pruned": modprune.load(args.pruned, trust_pickle=args.trust_pickle).float().eval()}
    with tempfile.TemporaryDirectory(prefix="modprune-deploy-") as tmp:
        rows = _rows(models, "onnx", args, Path(tmp))
        if args.openvino:
            rows += _rows(models, "openvino", args, Path(tmp))
    table = _markdown(rows)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
        Path(args.output).with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
