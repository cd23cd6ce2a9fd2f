"""A fast accuracy proxy for sensitivity analysis and search: detection loss and mAP on a held-out subset.

:class:`ProxyScorer` validates an in-memory ultralytics ``DetectionModel`` (pruned, not fine-tuned) on the
first ``subset`` images of a dataset's validation split (sorted by name, so every call sees the same images)
with ultralytics' ``DetectionValidator``, and adds the validation loss (box, cls, dfl and their sum), which
the validator computes only during training. The loss is the model's own criterion (``init_criterion``)
with ultralytics' default loss gains (or the model's ``args`` where it has them) on the raw head outputs of
each validation batch. The dataloader is built once and reused by every call.

With ``calibrate_batches=N`` every scored model is first copied and its BatchNorm running statistics are
re-estimated on N batches of the dataset's training images (:func:`modprune.calibrate.calibrate_batchnorm`,
images only, no labels, no weight change). A one-shot prune shifts what each BatchNorm sees; without
recalibration the proxy scores mostly the stale statistics (yolov8n at -30% MACs: mAP50 0.000 as pruned,
0.249 recalibrated; see docs/results.md, "BatchNorm recalibration").

:class:`RecoveryScorer` wraps any such score: it fine-tunes a copy of each model for a few epochs first, so
a search ranks pruned models by what they recover to rather than by what they score as cut.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import yaml
from torch import nn

from modprune.exceptions import ConfigError

if TYPE_CHECKING:
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

__all__ = ["ProxyScorer", "RecoveryScorer"]

log = logging.getLogger(__name__)


def _hyperparameters(model: nn.Module) -> SimpleNamespace:
    """ultralytics' default training arguments, overridden by the model's own (``model.args``)."""
    from ultralytics.cfg import get_cfg  # noqa: PLC0415

    own = getattr(model, "args", None)
    own = vars(own) if isinstance(own, SimpleNamespace) else dict(own) if isinstance(own, dict) else {}
    cfg = vars(get_cfg())
    return SimpleNamespace(**{**cfg, **{k: v for k, v in own.items() if k in cfg}})


def _criterion(model: nn.Module) -> Any:
    """The model's detection criterion, built with :func:`_hyperparameters` (``model.args`` restored)."""
    saved = model.__dict__.get("args", None)
    had = "args" in model.__dict__
    model.args = _hyperparameters(model)
    try:
        return model.init_criterion()
    finally:
        if had:
            model.args = saved
        else:
            del model.args


def _raw(preds: Any) -> Any:
    """The raw head outputs of an eval-mode forward (``(decoded, raw)``) as the criterion takes them."""
    if isinstance(preds, (list, tuple)) and len(preds) == 2 and isinstance(preds[1], (dict, list)):
        return preds[1]
    return preds


def _validator_class() -> type:
    """A ``DetectionValidator`` that also sums the detection loss of every batch."""
    from ultralytics.models.yolo.detect import DetectionValidator  # noqa: PLC0415

    class LossValidator(DetectionValidator):  # type: ignore[misc, valid-type]
        criterion: Any = None
        loss_sum: torch.Tensor | None = None
        batches = 0

        def preprocess(self, batch: dict[str, Any]) -> dict[str, Any]:
            self.current = super().preprocess(batch)
            return self.current

        def postprocess(self, preds: Any) -> Any:
            if self.criterion is not None:
                _, items = self.criterion(_raw(preds), self.current)
                values = torch.stack([v.detach().float().reshape(()) for v in items.values()]) if isinstance(
                    items, dict) else items.detach().float().reshape(-1)
                self.loss_names = list(items) if isinstance(items, dict) else [f"loss{i}" for i in range(len(values))]
                self.loss_sum = values if self.loss_sum is None else self.loss_sum + values
                self.batches += 1
            return super().postprocess(preds)

    return LossValidator


class ProxyScorer:
    """``scorer(model) -> {"val_loss", "box_loss", "cls_loss", "dfl_loss", "mAP50", "mAP50-95"}`` on a
    held-out subset of a YOLO dataset's validation split; close it (or use it as a context manager) to
    remove its temporary files.

    :param data_yaml: the dataset's ``data.yaml``.
    :param imgsz: validation image size.
    :param subset: how many validation images to use (the first ones by name); ``None``: all.
    :param batch: images per batch.
    :param calibrate_batches: recalibrate BatchNorm statistics of a copy of each scored model on this many
        batches of the training split's images first (0: score the model as it is).
    """

    def __init__(self, data_yaml: str | os.PathLike[str], *, imgsz: int, subset: int | None = 32,
                 batch: int = 16, split: str = "val", calibrate_batches: int = 0) -> None:
        from modprune.data import check_dataset, dataset_images  # noqa: PLC0415

        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
            raise ConfigError(f"subset={subset!r} must be a positive number of images or None", subset)
        if isinstance(calibrate_batches, bool) or not isinstance(calibrate_batches, int) or calibrate_batches < 0:
            raise ConfigError(f"calibrate_batches={calibrate_batches!r} must be a number of batches (0: off)",
                              calibrate_batches)
        summary = check_dataset(data_yaml)
        self.nc, self.imgsz, self.batch, self.split = summary.nc, int(imgsz), int(batch), split
        images = dataset_images(data_yaml, split)
        self.images = images[:subset] if subset else images
        self.calibrate_batches = calibrate_batches
        self.calibration_images = (dataset_images(data_yaml, "train")[: calibrate_batches * self.batch]
                                   if calibrate_batches else [])
        self._dir = Path(tempfile.mkdtemp(prefix="modprune-proxy-"))
        self.data_yaml = self._write_subset(Path(data_yaml), summary.root)
        self._dataloader: Any = None

    def _write_subset(self, data_yaml: Path, root: Path) -> Path:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
        listing = self._dir / f"{self.split}.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in self.images), encoding="utf-8")
        data = {**data, "path": str(root.resolve()), self.split: str(listing)}
        out = self._dir / "data.yaml"
        out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return out

    def __call__(self, model: nn.Module) -> dict[str, float]:
        from modprune.integrations.ultralytics.dataset_guard import guarded_datasets  # noqa: PLC0415
        from modprune.integrations.ultralytics.offline import ensure_offline  # noqa: PLC0415
        from modprune.integrations.ultralytics.validate import METRIC_KEYS, detect_head, quiet_ultralytics  # noqa: PLC0415

        head = detect_head(model)
        if int(head.nc) != self.nc:
            raise ConfigError(f"the model predicts {int(head.nc)} classes but the dataset has {self.nc}", head.nc)
        ensure_offline()
        model = self._calibrated(model)
        args = {"data": str(self.data_yaml), "imgsz": self.imgsz, "batch": self.batch, "device": "cpu",
                "split": self.split, "iou": 0.7, "workers": 0, "plots": False, "save_json": False,
                "save_txt": False, "verbose": False, "mode": "val", "task": "detect"}
        was_training = model.training
        with quiet_ultralytics(), guarded_datasets():
            validator = _validator_class()(dataloader=self._dataloader, save_dir=self._dir / "val", args=args)
            validator.criterion = _criterion(model)
            try:
                stats = validator(model=model)
            finally:
                model.train(was_training)
        self._dataloader = validator.dataloader
        return self._result(validator, stats, METRIC_KEYS)

    def _calibrated(self, model: nn.Module) -> nn.Module:
        """``model``, or a copy with BatchNorm statistics re-estimated on the training images."""
        if not self.calibrate_batches:
            return model
        from modprune.calibrate import batches_of, calibrate_batchnorm  # noqa: PLC0415

        work = copy.deepcopy(model)
        batches = batches_of(self.calibration_images, self.imgsz, self.batch)
        calibrate_batchnorm(work, batches, batches=self.calibrate_batches)
        return work

    @staticmethod
    def _result(validator: Any, stats: dict[str, Any], keys: dict[str, str]) -> dict[str, float]:
        out = {ours: float(stats[theirs]) for ours, theirs in keys.items()}
        if validator.loss_sum is not None and validator.batches:
            mean = (validator.loss_sum / validator.batches).tolist()
            names = [n if n.endswith("loss") else f"{n}_loss" for n in validator.loss_names]
            out.update(dict(zip(names, mean)))
            out["val_loss"] = float(sum(mean))
        return out

    def close(self) -> None:
        """Remove the temporary subset files."""
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ProxyScorer:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class RecoveryScorer:
    """``scorer(model) -> score(finetune(model))``: a proxy of what a pruned model recovers to.

    A one-shot score ranks pruned models by what they keep as cut; the fine-tuning that follows can
    reorder them (docs/results.md, the search at nominal batch 16). This scorer fine-tunes a copy of each
    scored model for ``options.epochs`` first, as NetAdapt ranks its candidates after short-term
    fine-tuning (Yang et al., ECCV 2018), then scores the copy with ``score`` (e.g. a
    :class:`ProxyScorer`). The scored model is not modified.

    Every call trains with the same ``options`` (same seed, same run folder
    ``options.project_dir/options.name``, overwritten by the next call), so a model's score depends on
    that model only. Give parallel workers their own ``project_dir``.

    :param score: the proxy applied after the fine-tuning, ``score(model) -> {metric: value}``.
    :param data_yaml: the dataset the fine-tuning trains on (its training split).
    :param options: how each model is fine-tuned (:class:`~modprune.integrations.ultralytics.trainer.FinetuneOptions`;
        ``resume`` is refused).
    :param teacher: distil from this model (e.g. the unpruned one), as the fine-tuning after the prune will.
    """

    def __init__(self, score: Callable[[nn.Module], Mapping[str, float]], data_yaml: str | os.PathLike[str],
                 options: FinetuneOptions, *, teacher: nn.Module | None = None) -> None:
        from modprune.integrations.ultralytics.trainer import FinetuneOptions  # noqa: PLC0415, F811

        if not callable(score):
            raise ConfigError(f"score must be callable (model -> metrics), got {type(score).__name__}", score)
        if not isinstance(options, FinetuneOptions):
            raise ConfigError(f"RecoveryScorer needs FinetuneOptions, got {type(options).__name__}", options)
        if options.resume:
            raise ConfigError("a proxy fine-tuning starts fresh for every model; set resume=False", options)
        self.score, self.data_yaml, self.options, self.teacher = score, data_yaml, options, teacher
        self.calls = 0

    def __call__(self, model: nn.Module) -> dict[str, float]:
        from modprune.integrations.ultralytics.trainer import finetune  # noqa: PLC0415

        tuned = finetune(model, self.data_yaml, self.options, teacher=self.teacher)
        self.calls += 1
        return {k: float(v) for k, v in self.score(tuned).items()}
