"""Validate an in-memory ultralytics detection model (pruned or not) with ultralytics' own metrics.

The model is handed to :class:`ultralytics.models.yolo.detect.DetectionValidator` as an ``nn.Module``; it is
never rebuilt from its yaml (that would silently restore the unpruned architecture). The validator works on
a copy (it fuses Conv+BN in the copy), so the caller's model is left as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from modprune.exceptions import ConfigError, DatasetError, UnsupportedModelError

__all__ = ["validate", "validate_exported", "METRIC_KEYS", "detect_head", "quiet_ultralytics"]

LOG = logging.getLogger(__name__)

# Our key -> ultralytics' results_dict key.
METRIC_KEYS = {
    "mAP50": "metrics/mAP50(B)",
    "mAP50-95": "metrics/mAP50-95(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
}


def detect_head(model: nn.Module) -> nn.Module:
    """The detection head (last layer) of an ultralytics ``DetectionModel``.

    Raises:
        UnsupportedModelError: ``model`` is not an ultralytics detection model (no ``model[-1]`` with
            ``nc`` and ``stride``).
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected an ultralytics DetectionModel (nn.Module), got {type(model).__name__}; "
                                    "load the model first (e.g. modprune's model loader)", obj=model)
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, (nn.Sequential, nn.ModuleList)) and len(layers) else None
    if head is None or not hasattr(head, "nc") or not hasattr(head, "stride"):
        raise UnsupportedModelError(f"{type(model).__name__} is not an ultralytics detection model (its last layer "
                                    "has no 'nc'/'stride'); validate() and finetune() need a DetectionModel",
                                    obj=model)
    return head


@contextlib.contextmanager
def quiet_ultralytics(verbose: bool = False) -> Iterator[None]:
    """Raise ultralytics' logger (which also hides its progress bars) and NNCF's (an OpenVINO INT8
    export logs every operation it leaves float) to WARNING unless ``verbose``."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("ultralytics", "nncf")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def validate(
    model: nn.Module,
    data_yaml: str | os.PathLike[str],
    *,
    imgsz: int,
    batch: int = 16,
    device: str = "cpu",
    split: str = "val",
    conf: float | None = None,
    iou: float = 0.7,
    workers: int = 0,
    save_dir: str | os.PathLike[str] | None = None,
    offline: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Detection metrics of an in-memory ultralytics ``DetectionModel`` on a YOLO dataset.

    Args:
        model: An ultralytics ``DetectionModel`` (possibly pruned); it is not modified.
        data_yaml: The dataset's ``data.yaml``.
        imgsz: Validation image size (letterboxed square side, a multiple of the model stride).
        batch: Images per batch.
        device: ``"cpu"``, ``"0"``, ``"cuda:0"``... as ultralytics accepts.
        split: Dataset split to evaluate (``"val"`` or ``"test"``).
        conf: Confidence threshold (ultralytics' validation default 0.001 when None).
        iou: NMS IoU threshold.
        workers: Dataloader workers (ultralytics uses 0 on CPU regardless).
        save_dir: Where ultralytics may write; a temporary directory (removed afterwards) when None.
        offline: Call :func:`~modprune.integrations.ultralytics.offline.ensure_offline` first.
        verbose: Let ultralytics log its progress and results table.

    Returns:
        ``{"mAP50", "mAP50-95", "precision", "recall", "fitness", "speed_ms"}``: the four metrics as floats
        in [0, 1], ultralytics' fitness, and its per-image timings in milliseconds.

    Raises:
        UnsupportedModelError: ``model`` is not an ultralytics detection model.
        DatasetError: the dataset is missing or malformed.
        ConfigError: an argument is out of range or the class count differs from the dataset's.
    """
    head = detect_head(model)
    _check_args(imgsz=imgsz, batch=batch, iou=iou, conf=conf, split=split, workers=workers)
    yaml_path = _checked_dataset(data_yaml, int(head.nc))
    if offline:
        from modprune.integrations.ultralytics.offline import ensure_offline  # noqa: PLC0415

        ensure_offline()
    args = {
        "data": str(yaml_path), "imgsz": int(imgsz), "batch": int(batch), "device": str(device), "split": split,
        "conf": conf, "iou": float(iou), "workers": int(workers), "plots": False, "save_json": False,
        "save_txt": False, "verbose": verbose, "mode": "val", "task": "detect",
    }
    stats, speed = _run_validator(model, args, save_dir=save_dir, verbose=verbose, yaml_path=yaml_path)
    result: dict[str, Any] = {ours: float(stats[theirs]) for ours, theirs in METRIC_KEYS.items()}
    result["fitness"] = float(stats.get("fitness", 0.0))
    result["speed_ms"] = {k: float(v) for k, v in speed.items()}
    LOG.info("validation on %s (%s, imgsz %d): mAP50 %.4f, mAP50-95 %.4f", yaml_path.name, split, imgsz,
             result["mAP50"], result["mAP50-95"])
    return result


def _checked_dataset(data_yaml: str | os.PathLike[str], nc: int) -> Path:
    """The dataset's resolved ``data.yaml`` path, after checking it and that it has ``nc`` classes."""
    yaml_path = Path(data_yaml).expanduser().resolve()
    from modprune.data import check_dataset  # noqa: PLC0415

    summary = check_dataset(yaml_path)
    if nc != summary.nc:
        raise ConfigError(f"the model predicts {nc} classes but {str(yaml_path)!r} has {summary.nc}; "
                          "use the dataset the model was built for", obj=nc)
    return yaml_path


def _run_validator(
    model: nn.Module,
    args: dict[str, Any],
    *,
    save_dir: str | os.PathLike[str] | None,
    verbose: bool,
    yaml_path: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """ultralytics' ``DetectionValidator`` on ``model``: (its stats dict, its per-image speed dict).

    Writes into ``save_dir``, or a temporary directory removed afterwards; restores the model's mode.
    """
    from ultralytics.models.yolo.detect import DetectionValidator  # noqa: PLC0415

    from modprune.integrations.ultralytics.dataset_guard import guarded_datasets  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        out = Path(save_dir).expanduser().resolve() if save_dir is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="modprune-val-")))
        stack.enter_context(quiet_ultralytics(verbose))
        stack.enter_context(guarded_datasets())  # no pickle read from, no file written into, the dataset
        validator = DetectionValidator(save_dir=out, args=args)
        was_training = model.training
        try:
            stats = validator(model=model)  # the validator deep-copies the module before fusing it
        except (FileNotFoundError, RuntimeError) as e:
            if "dataset" in str(e).lower() or isinstance(e, FileNotFoundError):
                raise DatasetError(f"ultralytics could not load {str(yaml_path)!r}: {e}", obj=yaml_path) from e
            raise
        finally:
            model.train(was_training)
    return stats, validator.speed


def validate_exported(
    path: str | os.PathLike[str],
    data_yaml: str | os.PathLike[str],
    *,
    imgsz: int,
    split: str = "val",
    offline: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Detection metrics of an exported file (ONNX, TorchScript, OpenVINO folder) through ``YOLO(path).val``,
    the way a user who deploys it validates it. Keys as :func:`validate` (``speed_ms`` included).

    Raises:
        DatasetError: the dataset is missing or malformed.
        ConfigError: an argument is out of range.
    """
    _check_args(imgsz=imgsz, batch=1, iou=0.7, conf=None, split=split, workers=0)
    yaml_path = Path(data_yaml).expanduser().resolve()
    from modprune.data import check_dataset  # noqa: PLC0415

    check_dataset(yaml_path)
    if offline:
        from modprune.integrations.ultralytics.offline import ensure_offline  # noqa: PLC0415

        ensure_offline()
    from ultralytics import YOLO  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="modprune-val-") as out, quiet_ultralytics(verbose):
        metrics = YOLO(str(path), task="detect").val(
            data=str(yaml_path), imgsz=int(imgsz), batch=1, device="cpu", split=split, plots=False, save_json=False,
            verbose=verbose, workers=0, project=out, name="val")
    stats = metrics.results_dict
    result: dict[str, Any] = {ours: float(stats[theirs]) for ours, theirs in METRIC_KEYS.items()}
    result["fitness"] = float(stats.get("fitness", 0.0))
    result["speed_ms"] = {k: float(v) for k, v in metrics.speed.items()}
    LOG.info("validation of %s on %s: mAP50 %.4f, mAP50-95 %.4f", path, yaml_path.name, result["mAP50"],
             result["mAP50-95"])
    return result


def _check_args(*, imgsz: Any, batch: Any, iou: Any, conf: Any, split: Any, workers: Any) -> None:
    """Raise ConfigError for an out-of-range validation argument."""
    for name, value, lo in (("imgsz", imgsz, 32), ("batch", batch, 1), ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name}={value!r} must be an integer >= {lo}", obj=value)
    if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 < iou <= 1:
        raise ConfigError(f"iou={iou!r} must be a number in (0, 1]", obj=iou)
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf < 1):
        raise ConfigError(f"conf={conf!r} must be None or a number in [0, 1)", obj=conf)
    if split not in ("val", "test", "train"):
        raise ConfigError(f"split={split!r} must be 'val', 'test' or 'train'", obj=split)
