"""Loading and saving ultralytics models: checkpoints (``.pt``), model yamls, and the weights-only allowlist.

* :func:`safe_classes` lists every class an ultralytics checkpoint pickles (all classes of
  ``ultralytics.nn.modules.*``, the model classes of ``ultralytics.nn.tasks``, ultralytics' namespace
  helpers, and modprune's split blocks), so :func:`modprune.serialization.load_file` loads them with
  PyTorch's weights-only unpickler, without ``trust_pickle``.
* :func:`load_model` reads an ultralytics checkpoint (a dict holding ``ema`` or ``model``; ultralytics
  saves half precision) or a model yaml, and returns a float32 module in eval mode.
* :func:`save_checkpoint` writes an ultralytics-style checkpoint that ``ultralytics.YOLO(path)`` loads. The
  model is stored in float32 (ultralytics stores half; ``YOLO`` converts to float on load either way), so
  that ``modprune.save`` / ``modprune.load`` round-trip a pruned model exactly.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import logging
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import yaml
from torch import nn

from modprune.exceptions import ModelLoadError
from modprune.integrations.ultralytics.retrain_guard import marked_yaml

__all__ = ["is_ultralytics_model", "load_model", "model_task", "safe_classes", "save_checkpoint", "yaml_modules"]

log = logging.getLogger(__name__)

_NN_MODULES = (
    "ultralytics.nn.modules.activation",
    "ultralytics.nn.modules.block",
    "ultralytics.nn.modules.conv",
    "ultralytics.nn.modules.head",
    "ultralytics.nn.modules.transformer",
    "ultralytics.nn.modules.utils",
)
_YAML_SUFFIXES = (".yaml", ".yml")


def _classes_of(module_name: str, *, modules_only: bool = False) -> list[type]:
    """Classes defined in an importable module (skipped with a debug line when it does not exist)."""
    try:
        module = __import__(module_name, fromlist=["_"])
    except ImportError:
        log.debug("ultralytics module %s not found; its classes are not allowlisted", module_name)
        return []
    out = []
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if obj.__module__ != module.__name__:
            continue
        if modules_only and not issubclass(obj, nn.Module):
            continue
        out.append(obj)
    return out


@functools.lru_cache(maxsize=1)
def _safe_classes() -> tuple[type, ...]:
    return tuple(_collect_safe_classes())


def safe_classes() -> list[type]:
    """Every class an ultralytics checkpoint (or a modprune-pruned one) may need to rebuild.

    Imports ultralytics (the allowlist needs the class objects); computed once per process.
    """
    return list(_safe_classes())


def _collect_safe_classes() -> list[type]:
    from ultralytics.utils import IterableSimpleNamespace  # noqa: PLC0415 - imports ultralytics

    from modprune.integrations.ultralytics.blocks import SPLIT_BLOCKS  # noqa: PLC0415

    classes: list[type] = []
    for name in _NN_MODULES:
        classes.extend(_classes_of(name))
    classes.extend(_classes_of("ultralytics.nn.tasks", modules_only=True))
    classes.extend([IterableSimpleNamespace, types.SimpleNamespace, *SPLIT_BLOCKS])
    seen: set[type] = set()
    return [c for c in classes if not (c in seen or seen.add(c))]


def yaml_modules() -> list[type]:
    """The blocks an ultralytics model yaml may name: the ``nn.Module`` classes of ``ultralytics.nn.modules``
    that ultralytics' parser resolves by name, except ``TorchVision`` (its constructor downloads weights)."""
    from ultralytics.nn import tasks  # noqa: PLC0415

    return [
        obj
        for name, obj in vars(tasks).items()
        if isinstance(obj, type)
        and issubclass(obj, nn.Module)
        and obj.__module__.startswith("ultralytics.nn.modules")
        and name == obj.__name__
        and name != "TorchVision"
    ]


def is_ultralytics_model(model: nn.Module) -> bool:
    """Whether ``model`` is an ultralytics ``BaseModel`` (DetectionModel, SegmentationModel, ...)."""
    if "ultralytics" not in sys.modules:
        return False
    from ultralytics.nn.tasks import BaseModel  # noqa: PLC0415

    return isinstance(model, BaseModel)


def _read_cfg(path: Path) -> Any:
    """The yaml's content; a bare name that is no file (``yolov8n.yaml``) is looked up among
    ultralytics' bundled model configs. None when unreadable or not found."""
    if not path.exists() and path.parent == Path("."):
        from ultralytics.nn.tasks import yaml_model_load  # noqa: PLC0415

        try:
            return yaml_model_load(str(path))
        except Exception:  # ultralytics raises several error types for unknown names
            return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None


def _model_class(cfg: dict[str, Any], source: str) -> tuple[type, str]:
    """The ultralytics model class and task for a model dict, chosen by the type of its output module
    (RT-DETR's decoder, YOLO-World's and YOLOE's heads need their own model classes), else by task."""
    from ultralytics.nn import tasks  # noqa: PLC0415

    head_name = cfg["head"][-1][-2] if cfg["head"] and isinstance(cfg["head"][-1], list) else None
    head = getattr(tasks, head_name, None) if isinstance(head_name, str) else None
    by_head = [
        ("RTDETRDecoder", "RTDETRDetectionModel", "detect"),
        ("YOLOESegment", "YOLOESegModel", "segment"),
        ("YOLOEDetect", "YOLOEModel", "detect"),
        ("WorldDetect", "WorldModel", "detect"),
    ]
    for head_cls, model_cls, task in by_head:
        base = getattr(tasks, head_cls, None)
        if isinstance(head, type) and isinstance(base, type) and issubclass(head, base) and hasattr(tasks, model_cls):
            return getattr(tasks, model_cls), task
    classes = {
        "detect": tasks.DetectionModel,
        "segment": tasks.SegmentationModel,
        "pose": tasks.PoseModel,
        "obb": tasks.OBBModel,
        "classify": tasks.ClassificationModel,
    }
    task = tasks.guess_model_task(cfg)
    if task not in classes:
        raise ModelLoadError(
            f"{source!r} is an ultralytics {task!r} model yaml (output module {head_name!r}); modprune builds "
            f"{', '.join(classes)}, RT-DETR, YOLO-World and YOLOE models only",
            source,
        )
    return classes[task], task


def _from_yaml(path: Path) -> nn.Module | None:
    """An ultralytics model built from a model yaml (``backbone`` and ``head``) with the model class its
    output module needs, its ``task`` set; or None."""
    cfg = _read_cfg(path)
    if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
        return None
    model_cls, task = _model_class(cfg, str(path))
    try:
        with restricted_parse():
            model = model_cls(str(path), verbose=False)
    except Exception as exc:  # ultralytics' yaml parser raises many error types
        raise ModelLoadError(f"ultralytics could not build {str(path)!r}: {type(exc).__name__}: {exc}", str(path)) from None
    model.task = task
    return model


@contextlib.contextmanager
def restricted_parse() -> Iterator[None]:
    """Defence in depth: ultralytics' own restricted model building (no ``eval`` of the activation, layers
    must be ``nn.Module`` classes) for this thread, where the installed ultralytics has it. modprune has
    already validated the yaml (:mod:`modprune.model_yaml`); this does not replace that check."""
    from ultralytics.nn import tasks  # noqa: PLC0415

    local = getattr(getattr(tasks, "_SafeLoad", None), "_local", None)
    if local is None or not getattr(tasks._SafeLoad, "SUPPORTED", False):
        yield
        return
    before = getattr(local, "active", False)
    local.active = True
    try:
        yield
    finally:
        local.active = before


def load_model(path: Path, trust_pickle: bool) -> nn.Module | None:
    """A float32 model from an ultralytics checkpoint or model yaml; None for other files."""
    if path.suffix.lower() in _YAML_SUFFIXES:
        model = _from_yaml(path)
        return model.float().eval() if model is not None else None
    from modprune.serialization import load_file  # noqa: PLC0415 - avoids an import cycle

    ckpt = load_file(path, trust_pickle=trust_pickle)
    if not isinstance(ckpt, Mapping):
        return None
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, nn.Module):
        return None
    model = _unfreeze(model.float())
    _resplit(model, ckpt.get("modprune"))
    train_args = ckpt.get("train_args")
    if isinstance(train_args, Mapping) and not getattr(model, "args", None):
        model.args = dict(train_args)
    return model.eval()


def _resplit(model: nn.Module, meta: Any) -> None:
    """Blocks saved as ultralytics classes for portability become split blocks again (exact: the merged
    ``cv1`` is sliced back into the same two halves), so save/load round-trips a pruned model."""
    names = meta.get("stock_blocks") if isinstance(meta, Mapping) else None
    if names:
        from modprune.integrations.ultralytics.rewrite import rewrite_blocks  # noqa: PLC0415

        rewrite_blocks(model, only=set(names))


def _unfreeze(model: nn.Module) -> nn.Module:
    """EMA checkpoints store every parameter frozen; make them trainable again as ultralytics' trainer
    does, except DFL's fixed projection (found by type), which stays frozen."""
    from ultralytics.nn.modules import DFL  # noqa: PLC0415

    for p in model.parameters():
        p.requires_grad_(True)
    for module in model.modules():
        if isinstance(module, DFL):
            for p in module.parameters():
                p.requires_grad_(False)
    return model


def _train_args(model: nn.Module) -> dict[str, Any]:
    """The model's ``args`` as a dict, always with its ``task`` (``YOLO(path)`` picks predictor and
    validator by it, and defaults to ``detect`` when a checkpoint does not say)."""
    args = getattr(model, "args", None)
    if isinstance(args, Mapping):
        out = dict(args)
    elif args is not None and hasattr(args, "__dict__"):
        out = dict(vars(args))
    else:
        out = {}
    out["task"] = model_task(model)
    return out


def model_task(model: nn.Module) -> str:
    """The ultralytics task of ``model``: its ``task`` attribute, else its ``args``' task, else guessed
    from its yaml and head modules by ultralytics (``detect``, ``segment``, ``classify``, ``pose``, ...)."""
    from ultralytics.nn.tasks import guess_model_task  # noqa: PLC0415

    task = getattr(model, "task", None)
    if isinstance(task, str) and task:
        return task
    args = getattr(model, "args", None)
    task = args.get("task") if isinstance(args, Mapping) else getattr(args, "task", None)
    if isinstance(task, str) and task:
        return task
    return guess_model_task(model) or "detect"  # from the yaml's output module, else the head's type


def save_checkpoint(model: nn.Module, path: Path, metadata: Mapping[str, Any]) -> None:
    """Write ``model`` as an ultralytics-style checkpoint (loadable by ``ultralytics.YOLO(path)``).

    The live model is not modified; the saved copy is float32 and in eval mode.
    A network that differs from what its yaml builds (pruned) is saved with the yaml marked, so stock
    ``YOLO(path).train()`` stops with one line saying how to train it (:mod:`.retrain_guard`).
    """
    was_training = model.training
    model.eval()
    try:
        saved, meta = _portable(model, metadata)
        with marked_yaml(saved) as marked:
            _write(saved, {**meta, "retrain_guard": marked}, _train_args(model), path)
    finally:
        model.train(was_training)


def _write(saved: nn.Module, meta: dict[str, Any], train_args: dict[str, Any], path: Path) -> None:
    """Save the checkpoint dict ultralytics reads, with ``saved`` as its model."""
    import ultralytics  # noqa: PLC0415

    ckpt = {
        "date": datetime.datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": saved,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": train_args,
        "train_metrics": {},
        "train_results": {},
        "modprune": meta,
    }
    torch.save(ckpt, path)


def _portable(model: nn.Module, metadata: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The float32 model to pickle, with split blocks of equal halves written as ultralytics' own classes,
    and the metadata completed with ``requires`` (the distributions a loader needs beyond ultralytics)."""
    from modprune.integrations.ultralytics.blocks import SplitBlock  # noqa: PLC0415
    from modprune.integrations.ultralytics.portable import required_packages, to_stock_blocks  # noqa: PLC0415

    float32 = next(model.parameters()).dtype == torch.float32
    converted: list[str] = []
    if any(isinstance(m, SplitBlock) for m in model.modules()):
        saved = _float_copy(model)
        to_stock_blocks(saved, converted)
    else:
        saved = model if float32 else _float_copy(model)
    requires = required_packages(saved)
    if requires:
        log.info("%s pickles classes of %s: loading it needs 'pip install %s' beside ultralytics",
                 type(model).__name__, ", ".join(requires), " ".join(requires))
    meta = {**dict(metadata), "requires": requires, "portable": not requires, "stock_blocks": sorted(converted)}
    return saved, meta


def _float_copy(model: nn.Module) -> nn.Module:
    import copy  # noqa: PLC0415

    return copy.deepcopy(model).float()
