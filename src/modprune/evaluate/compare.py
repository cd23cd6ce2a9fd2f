"""Side-by-side comparison of a base model and pruned variants.

Every model gets: params, nonzero, MACs, file size (its file on disk, the dense fp16 state dict and
modprune's compressed sparse format), latency in PyTorch and, optionally, ONNX Runtime (measured
together, interleaved, with a fixed thread count: see :mod:`modprune.measure.latency`), FPS, and
with a dataset mAP50 / mAP50-95. Latency is timed on the inference form users ship: the fused model
(:func:`modprune.fuse`) and its ONNX export. Latency differences whose confidence interval includes
"no change" are reported as "no measurable change", never as a speedup; figures measured on a busy
machine are marked "unreliable: machine busy". MACs and latency are separate columns:
a MACs ratio is not a speedup.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure import MAC_COUNTER, count_macs, count_nonzero, count_params
from modprune.fusion import fuse
from modprune.measure.latency import measure_latency, verdict
from modprune.measure.machine import BUSY_LABEL

__all__ = ["CompareOptions", "compare_models"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompareOptions:
    """How to compare. ``data`` enables accuracy (needs the ultralytics integration).

    ONNX Runtime times the graph users deploy: for ultralytics models (batch 1) the file ultralytics'
    exporter writes (fused, as ``yolo export``), for other models modprune's own export. ``int8`` adds a
    ``"<name> int8"`` row per model (ONNX Runtime static INT8 calibrated on ``calibration_images``
    training images of ``data``; its mAP comes from ``YOLO(file).val``).
    """

    imgsz: int = 640
    batch: int = 1
    threads: int = 2
    rounds: int = 20
    warmup: int = 3
    onnx: bool = True
    data: str | None = None
    val_imgsz: int | None = None
    val_batch: int = 16
    int8: bool = False
    calibration_images: int = 64

    def __post_init__(self) -> None:
        for name in ("imgsz", "batch", "threads", "rounds", "val_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}", value)
        if self.rounds < 3:
            raise ConfigError(f"rounds must be at least 3 to report a spread, got {self.rounds}", self.rounds)
        if self.int8 and not (self.onnx and self.data and self.batch == 1):
            raise ConfigError("int8 rows need ONNX timing, batch 1 and a dataset (calibration images and "
                              "accuracy): pass data and keep onnx on", self.int8)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup must be an integer >= 0, got {self.warmup!r}", self.warmup)


def _sizes(model: nn.Module, path: Path | None, workdir: Path) -> dict[str, int | None]:
    from modprune.evaluate.storage import save_sparse_state_dict

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dense = workdir / "dense_fp16.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, dense)
    sparse = save_sparse_state_dict(state, workdir / "sparse.safetensors", dtype="float16")
    sizes = {
        "file_bytes": path.stat().st_size if path is not None and path.is_file() else None,
        "dense_fp16_bytes": dense.stat().st_size,
        "sparse_fp16_bytes": sparse.stat().st_size,
    }
    dense.unlink()
    sparse.unlink()
    return sizes


def _latency_rows(result: Mapping[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name, stats in result["models"].items():
        row = {
            f"{prefix}_median_ms": stats["median_ms"],
            f"{prefix}_p10_ms": stats["p10_ms"],
            f"{prefix}_p90_ms": stats["p90_ms"],
            f"{prefix}_fps": stats["fps"],
            f"{prefix}_reliable": result["reliable"],
        }
        ratio = result["ratios"].get(name)
        if ratio is not None:
            row[f"{prefix}_ratio_median"] = ratio["median"]
            row[f"{prefix}_ratio_p10"] = ratio["p10"]
            row[f"{prefix}_ratio_p90"] = ratio["p90"]
            row[f"{prefix}_ratio_ci_low"] = ratio["ci_low"]
            row[f"{prefix}_ratio_ci_high"] = ratio["ci_high"]
            row[f"{prefix}_verdict"] = verdict(ratio)
        rows[name] = row
    return rows


def _export_one(model: nn.Module, path: Path, opts: CompareOptions, int8: bool) -> Path:
    """The graph users deploy: ultralytics' exporter for ultralytics models, modprune's otherwise."""
    from modprune.evaluate.export import export_model  # noqa: PLC0415
    from modprune.evaluate.onnx_export import export_onnx  # noqa: PLC0415
    from modprune.integrations.ultralytics.checkpoint import is_ultralytics_model  # noqa: PLC0415

    if (is_ultralytics_model(model) and opts.batch == 1) or int8:
        return export_model(model, path, imgsz=opts.imgsz, int8=int8, data=opts.data,
                            calibration_images=opts.calibration_images).path
    return export_onnx(model, path, opts.imgsz, batch=opts.batch)


def _onnx_sessions(models: Mapping[str, nn.Module], opts: CompareOptions, workdir: Path,
                   say: Progress) -> tuple[dict[str, Any], dict[str, Path]]:
    """ONNX Runtime sessions and exported files: one per model, plus ``"<name> int8"`` with ``opts.int8``."""
    from modprune.evaluate.onnx_export import ort_session  # noqa: PLC0415

    sessions, files = {}, {}
    for name, model in models.items():
        for int8 in (False, True) if opts.int8 else (False,):
            key = f"{name} int8" if int8 else name
            say(f"[export {len(files) + 1}] {key}")
            files[key] = _export_one(model, workdir / f"{len(files)}{'_int8' if int8 else ''}.onnx", opts, int8)
            sessions[key] = ort_session(files[key], opts.threads)
    return sessions, files


def _check_classes(models: Mapping[str, nn.Module], data: str | os.PathLike[str]) -> None:
    """Refuse a model whose detection head predicts another number of classes than ``data`` has."""
    from modprune.data import check_dataset  # noqa: PLC0415

    nc = check_dataset(data).nc
    for name, model in models.items():
        layers = getattr(model, "model", None)
        head = layers[-1] if isinstance(layers, (nn.Sequential, nn.ModuleList)) and len(layers) else None
        head_nc = getattr(head, "nc", None)
        if isinstance(head_nc, int) and head_nc != nc:
            raise ConfigError(f"{name}: the model predicts {head_nc} classes but {str(data)!r} has {nc}; validate "
                              "on the dataset the model was trained for, or fine-tune it first (modprune finetune "
                              "--reset-head)", name)


def compare_models(
    models: Mapping[str, nn.Module],
    *,
    paths: Mapping[str, str | os.PathLike[str]] | None = None,
    options: CompareOptions = CompareOptions(),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compare ``models`` (the first is the base). Returns a JSON-friendly dict with ``rows``.

    :param paths: the files the models came from (for their on-disk size).
    :param progress: called with a short line before each long step.
    """
    if len(models) < 1:
        raise ConfigError("compare needs at least one model", models)
    say = progress or (lambda msg: log.info("%s", msg))
    names = list(models)
    if options.data:
        _check_classes(models, options.data)  # before minutes of latency measurement
    x = torch.zeros(options.batch, 3, options.imgsz, options.imgsz)
    rows: dict[str, dict[str, Any]] = {n: {"name": n, "path": str((paths or {}).get(n, "")) or None} for n in names}
    with tempfile.TemporaryDirectory(prefix="modprune-compare-") as tmp:
        workdir = Path(tmp)
        for i, name in enumerate(names, 1):
            say(f"[counts {i}/{len(names)}] {name}: params, MACs, file sizes")
            model = models[name].float().eval()
            p = (paths or {}).get(name)
            rows[name].update(
                params=count_params(model),
                nonzero=count_nonzero(model),
                macs=count_macs(model, x),
                **_sizes(model, Path(p) if p else None, workdir),
            )
        machine, files = _latency(models, x, rows, options, workdir, say)
        if options.data:
            _accuracy(models, rows, options, say)
            if options.int8:
                _exported_accuracy({k: v for k, v in files.items() if k.endswith(" int8")}, rows, options, say)
        names = [k for n in names for k in (n, f"{n} int8") if k in rows]
    return {
        "base": names[0],
        "options": asdict(options),
        "mac_counter": MAC_COUNTER,
        "torch_version": str(torch.__version__),
        "cpu_count": os.cpu_count(),
        "inference_form": "fused (conv + BatchNorm folded, modprune.fuse)",
        "machine": machine,
        "rows": [rows[n] for n in names],
    }


def _latency(models: Mapping[str, nn.Module], x: torch.Tensor, rows: dict[str, dict[str, Any]], options: CompareOptions,
             workdir: Path, say: Progress) -> tuple[dict[str, Any], dict[str, Path]]:
    """Time the fused models in PyTorch and (optionally) their ONNX export; fill ``rows``; return the
    busy-machine checks ``{"torch": ..., "ort": ...}`` and the exported files by row name."""
    names = list(models)
    files: dict[str, Path] = {}
    fused = {name: fuse(model) for name, model in models.items()}
    say(f"[latency] PyTorch (fused), {options.rounds} interleaved rounds, {options.threads} threads, "
        f"batch {options.batch}")
    torch_lat = measure_latency(fused, x, warmup=options.warmup, rounds=options.rounds, threads=options.threads,
                                baseline=names[0])
    machine = {"torch": torch_lat["machine"]}
    for name, row in _latency_rows(torch_lat, "torch").items():
        rows[name].update(row)
    if options.onnx:
        say("[latency] exporting the models as they ship (fused) and timing ONNX Runtime")
        sessions, files = _onnx_sessions(models, options, workdir, say)  # the exporters fuse themselves
        ort_lat = measure_latency(sessions, x, warmup=options.warmup, rounds=options.rounds, baseline=names[0])
        machine["ort"] = ort_lat["machine"]
        _add_int8_rows(rows, names, files)
        for name, row in _latency_rows(ort_lat, "ort").items():
            rows[name].update(row)
    for check in machine.values():
        if check and check["busy"]:
            say(f"[latency] {BUSY_LABEL}: {'; '.join(check['reasons'])}")
    return machine, files


def _accuracy(models: Mapping[str, nn.Module], rows: dict[str, dict[str, Any]], opts: CompareOptions, say: Progress) -> None:
    from modprune.integrations.ultralytics.validate import validate

    imgsz = opts.val_imgsz or opts.imgsz
    for i, (name, model) in enumerate(models.items(), 1):
        say(f"[accuracy {i}/{len(models)}] {name}: validating on {opts.data} at {imgsz}px")
        metrics = validate(model, opts.data, imgsz=imgsz, batch=opts.val_batch)
        rows[name].update({"mAP50": metrics["mAP50"], "mAP50-95": metrics["mAP50-95"]})


def _add_int8_rows(rows: dict[str, dict[str, Any]], names: list[str], files: Mapping[str, Path]) -> None:
    """A row per INT8 graph: the counts of its float model, the INT8 file's size."""
    for name in names:
        key = f"{name} int8"
        if key in files:
            rows[key] = {**rows[name], "name": key, "path": None, "quantization": "int8",
                         "file_bytes": files[key].stat().st_size}
            rows[name]["quantization"] = "fp32"


def _exported_accuracy(files: Mapping[str, Path], rows: dict[str, dict[str, Any]], opts: CompareOptions,
                       say: Progress) -> None:
    from modprune.integrations.ultralytics.validate import validate_exported  # noqa: PLC0415

    imgsz = opts.imgsz  # an exported graph has a fixed input size
    for i, (name, path) in enumerate(files.items(), 1):
        say(f"[accuracy {i}/{len(files)}] {name}: validating the exported file on {opts.data} at {imgsz}px")
        metrics = validate_exported(path, opts.data, imgsz=imgsz)
        rows[name].update({"mAP50": metrics["mAP50"], "mAP50-95": metrics["mAP50-95"]})
