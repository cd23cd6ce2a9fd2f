"""Fine-tune a pruned ultralytics detection model without losing its pruned architecture or its zeros.

Why a trainer subclass: ``YOLO(...).train()`` rebuilds the model from its yaml and copies over only the
weights whose shapes still match, so a structurally pruned model silently becomes the unpruned
architecture again. :class:`PrunedModelTrainer` trains the given ``nn.Module`` itself (through EMA,
checkpoints and the final validation).

What :func:`finetune` adds on top of ultralytics' detection training:

* **Unstructured masks stay at zero.** Weights that are exactly zero before training (or an explicit mask
  dict) are re-zeroed right after every optimizer step, through a ``torch.optim`` step post-hook, i.e.
  before ultralytics updates its EMA, so the EMA and every checkpoint keep the same zeros.
* **Output-level knowledge distillation** (optional): the detection criterion is wrapped so that a frozen
  teacher's raw head outputs on the same batch add a term ``distill_weight * (cls KD + box KD)``: a
  Bernoulli KL divergence between the sigmoid class scores, and a KL divergence between the box
  distributions (DFL bins), weighted by the teacher's confidence per anchor. The term is logged as
  ``kd_loss``.
* **Feature-level distillation** (optional, ``FinetuneOptions.distill="feature"`` or ``"both"``):
  channel-wise distillation (Shu et al., ICCV 2021) of the feature maps the Detect head receives, through
  learned 1x1 adapters where the pruned student is narrower (:mod:`.feature_distill`); logged as ``fd_loss``.
* Float32 results: ultralytics writes half-precision checkpoints; :func:`finetune` keeps a float32 copy of
  the best EMA weights in memory and returns the model in float32.

DDP note: for multi-GPU training ultralytics starts worker processes that rebuild the trainer from a
cloudpickled file holding ``type(trainer)``, the model and the callbacks. Classes are pickled *by
reference*, so the trainer, the callbacks and the criterion wrapper used here are defined at module level
in this importable module: a worker that unpickles them imports ``modprune.integrations.ultralytics.trainer``
and with it modprune (and thereby its plugins, whose classes the pruned model may contain). Keep
modprune installed (not just on ``sys.path`` of the parent) when training on several GPUs, and set
``YOLO_AUTOINSTALL=False`` (:func:`~modprune.integrations.ultralytics.offline.ensure_offline` does) so a
missing module is reported instead of "auto-installed" from PyPI. In DDP the best weights come from
``best.pt`` (half precision, converted back to float32) instead of the in-memory copy.

This module imports ultralytics at import time; ``import modprune`` never imports it.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import unwrap_model

from modprune.exceptions import ConfigError, ModelLoadError, ModpruneError, UnsupportedModelError
from modprune.integrations.ultralytics.retrain_guard import marked_yaml, rebuild_differs
from modprune.integrations.ultralytics.validate import detect_head, quiet_ultralytics

__all__ = [
    "EpochLogger",
    "PrunedModelTrainer",
    "MaskKeeper",
    "DistillationInstaller",
    "BestStateKeeper",
    "DetectionDistillationLoss",
    "output_distillation_loss",
    "zero_masks",
    "FinetuneOptions",
    "finetune",
    "MODEL_PLACEHOLDER",
    "reset_head",
    "default_runs_dir",
    "check_train_overrides",
]

LOG = logging.getLogger(__name__)

# ultralytics needs a string in args.model; it is never loaded because the trainer holds the module itself.
MODEL_PLACEHOLDER = "modprune-in-memory-model"
# Arguments finetune() sets itself; they may not come in through ``overrides``.
_RESERVED_ARGS = frozenset({"model", "data", "epochs", "imgsz", "batch", "seed", "workers", "device", "project",
                            "name", "exist_ok", "mode", "task", "resume", "pretrained", "distill_model"})


class PrunedModelTrainer(DetectionTrainer):
    """A ``DetectionTrainer`` that trains the module it is given instead of building one from a yaml.

    Args:
        cfg: ultralytics default configuration (as for ``DetectionTrainer``).
        overrides: ultralytics training arguments.
        _callbacks: callbacks dict (ultralytics' DDP workers pass the pickled callbacks here).
        model: The (pruned) ``DetectionModel`` to train. It becomes ``trainer.model`` right away, so
            ultralytics' DDP launcher pickles it for the workers.
    """

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None,
                 _callbacks: dict | None = None, model: nn.Module | None = None) -> None:
        overrides = dict(overrides or {})
        overrides.setdefault("model", MODEL_PLACEHOLDER)
        super().__init__(cfg, overrides, _callbacks)
        self._given_model = model
        if model is not None:
            self.model = model

    def check_resume(self, overrides: dict[str, Any]) -> None:
        """``resume=path/to/last.pt``: read that checkpoint with modprune's restricted loader (ultralytics'
        own reader unpickles without restriction); the run keeps this trainer's arguments."""
        resume = self.args.resume
        self.resume = bool(resume)
        self._resume_ckpt = None
        if not resume:
            return
        last = Path(str(resume))
        if resume is True or not last.is_file():
            raise ConfigError(f"resume={resume!r}: give the interrupted run's weights/last.pt (a file)", obj=resume)
        from modprune.serialization import load_file  # noqa: PLC0415 - weights-only, plugin allowlist

        ckpt = load_file(last)
        if not isinstance(ckpt, dict) or ckpt.get("optimizer") is None or int(ckpt.get("epoch", -1)) < 0:
            raise ConfigError(f"{str(last)!r} is not a resumable checkpoint (its run finished or holds no optimizer "
                              "state); start a new run instead", obj=str(last))
        self._resume_ckpt = ckpt

    def setup_model(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (its EMA weights loaded into the model), else None."""
        ckpt = getattr(self, "_resume_ckpt", None)
        if not isinstance(self.model, nn.Module):
            self.model = self.get_model(weights=None)
        if ckpt is not None:
            source = ckpt.get("ema") if isinstance(ckpt.get("ema"), nn.Module) else ckpt.get("model")
            self.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                        for k, v in source.state_dict().items()})
        return ckpt

    def save_model(self) -> None:
        """Save as ultralytics does, with the EMA's yaml marked when the network is not what that yaml builds,
        so the run's ``last.pt`` / ``best.pt`` also stop a plain ``YOLO(path).train()`` (:mod:`.retrain_guard`)."""
        ema = getattr(getattr(self, "ema", None), "ema", None)
        if not isinstance(ema, nn.Module):
            super().save_model()
            return
        if getattr(self, "_rebuild_differs", None) is None:  # the architecture does not change while training
            self._rebuild_differs = rebuild_differs(ema)
        with marked_yaml(ema, self._rebuild_differs):
            super().save_model()

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> nn.Module:
        """Return the model to train unchanged (ultralytics' version would rebuild it from ``cfg``).

        The model given at construction; else, when ultralytics' ``YOLO(path).train(trainer=PrunedModelTrainer)``
        constructs this trainer, the loaded checkpoint's module (``weights``) itself; else the checkpoint
        named by ``args.model``, loaded with :func:`modprune.load` (weights-only).
        """
        model = getattr(self, "_given_model", None)
        if model is None and isinstance(weights, nn.Module):
            model = weights
        if model is None and str(getattr(self.args, "model", "")).lower().endswith(".pt"):
            from modprune.serialization import load  # noqa: PLC0415 - weights-only, plugin allowlist

            model = load(self.args.model).float()
        if model is None:
            raise ConfigError("PrunedModelTrainer needs the model to train: pass model=... (an ultralytics "
                              "DetectionModel), set trainer.model before train(), or use "
                              "YOLO('pruned.pt').train(trainer=PrunedModelTrainer, ...)", obj=cfg)
        n_data = getattr(self, "data", None) or {}
        head = detect_head(model)
        if "nc" in n_data and int(head.nc) != int(n_data["nc"]):
            raise ConfigError(f"the model predicts {int(head.nc)} classes but the dataset has {n_data['nc']}; use "
                              "modprune.finetune(..., FinetuneOptions(reset_head=True)) or 'modprune finetune "
                              "--reset-head' to re-initialise the head for the dataset's classes", obj=head.nc)
        self._given_model = model
        return model


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks (True = trainable, False = held at zero) of the weights that hold exact zeros.

    Only weight tensors with two or more dimensions (convolution and linear weights, what unstructured
    pruning masks) are considered; biases and norm parameters start at zero legitimately.
    """
    masks = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2 and p.is_floating_point():
            keep = p.detach() != 0
            if not bool(keep.all()):
                masks[name] = keep.cpu()
    return masks


def _check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check an explicit mask dict against the model's parameters; return boolean CPU masks."""
    params = dict(model.named_parameters())
    out = {}
    for name, m in masks.items():
        if name not in params:
            raise ConfigError(f"mask for {name!r} names no parameter of the model; use names from "
                              "model.named_parameters() (e.g. 'model.0.conv.weight')", obj=name)
        m = torch.as_tensor(m)
        if tuple(m.shape) != tuple(params[name].shape):
            raise ConfigError(f"mask for {name!r} has shape {tuple(m.shape)} but the parameter has "
                              f"{tuple(params[name].shape)}", obj=name)
        out[name] = (m != 0).cpu()
    return out


class MaskKeeper:
    """Callback (``on_pretrain_routine_end``) that holds masked weights at exactly zero during training.

    It zeroes the masked entries once, then registers an optimizer step post-hook that zeroes them again
    after every step, before ultralytics updates the EMA. Picklable (module-level class, tensor state).
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = {k: torch.as_tensor(v).bool().cpu() for k, v in masks.items()}

    def __call__(self, trainer: Any) -> None:
        """Apply the masks to ``trainer.model`` and hook ``trainer.optimizer``."""
        if not self.masks:
            return
        model = unwrap_model(trainer.model)
        params = dict(model.named_parameters())
        pairs = []
        for name, keep in self.masks.items():
            if name not in params:
                raise ConfigError(f"mask for {name!r} names no parameter of the trained model", obj=name)
            pairs.append((params[name], ~keep.to(params[name].device)))

        def reapply(*_: Any) -> None:
            with torch.no_grad():
                for p, drop in pairs:
                    p.masked_fill_(drop, 0.0)

        reapply()
        trainer.optimizer.register_step_post_hook(reapply)
        ema = getattr(trainer, "ema", None)
        if ema is not None:  # the EMA copy was made before this callback; zero it the same way
            ema_params = dict(ema.ema.named_parameters())
            with torch.no_grad():
                for name, keep in self.masks.items():
                    if name in ema_params:
                        ema_params[name].masked_fill_(~keep.to(ema_params[name].device), 0.0)
        LOG.info("holding %d masked weights at zero in %d tensors",
                 sum(int((~m).sum()) for m in self.masks.values()), len(self.masks))


def _raw_head_outputs(preds: Any) -> dict[str, Any]:
    """The raw head dict (``boxes``, ``scores``, ...) from training-mode or eval-mode model output."""
    if isinstance(preds, (tuple, list)) and len(preds) == 2 and isinstance(preds[1], dict):
        preds = preds[1]
    if not isinstance(preds, dict):
        raise ModpruneError(f"cannot distil: the detection head returned {type(preds).__name__}, expected the raw "
                            "output dict of an ultralytics Detect head", obj=preds)
    return preds


def output_distillation_loss(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                             temperature: float = 1.0) -> torch.Tensor:
    """Output-level KD between two raw Detect-head outputs (``scores`` (B, nc, A), ``boxes`` (B, 4*reg_max, A)).

    * class term: Bernoulli KL(teacher || student) of the sigmoid scores at temperature ``T``, summed and
      divided by the teacher's total score mass (like ultralytics' BCE normalisation);
    * box term: KL between the softmax box distributions per side (DFL bins) at temperature ``T``, or an
      L1 distance when the head has no DFL (``reg_max == 1``), averaged over anchors weighted by the
      teacher's max class probability.

    Both are multiplied by ``T**2``. End-to-end heads (``one2many`` / ``one2one`` branches) average the
    branches.
    """
    if "one2many" in student or "one2many" in teacher:
        keys = [k for k in ("one2many", "one2one") if k in student and k in teacher]
        if not keys:
            raise ConfigError("student and teacher heads differ (one is end-to-end, the other is not); "
                              "distil between models with the same head type", obj=list(teacher))
        return sum(output_distillation_loss(student[k], teacher[k], temperature) for k in keys) / len(keys)
    ss, ts = student["scores"], teacher["scores"].detach().to(student["scores"].dtype)
    sb, tb = student["boxes"], teacher["boxes"].detach().to(student["boxes"].dtype)
    if ss.shape != ts.shape or sb.shape != tb.shape:
        raise ConfigError(f"teacher outputs {tuple(ts.shape)}/{tuple(tb.shape)} do not match the student's "
                          f"{tuple(ss.shape)}/{tuple(sb.shape)}; the teacher needs the same classes, strides "
                          "and box encoding (reg_max)", obj=(tuple(ts.shape), tuple(tb.shape)))
    t = float(temperature)
    s_logit, t_logit = ss / t, ts / t
    p_t = torch.sigmoid(t_logit)
    # KL(Bern(p_t) || Bern(p_s)) = BCE(s, p_t) - BCE(t, p_t), exactly zero when the logits agree.
    cls_kl = (F.binary_cross_entropy_with_logits(s_logit, p_t, reduction="none")
              - F.binary_cross_entropy_with_logits(t_logit, p_t, reduction="none"))
    cls_term = cls_kl.sum() / p_t.sum().clamp(min=1.0)
    weight = p_t.max(dim=1).values  # (B, A) teacher confidence per anchor
    bsz, ch, anchors = sb.shape
    if ch % 4:
        raise ConfigError(f"box output has {ch} channels, not a multiple of 4", obj=ch)
    reg_max = ch // 4
    if reg_max > 1:
        s_logp = F.log_softmax(sb.view(bsz, 4, reg_max, anchors) / t, dim=2)
        t_logp = F.log_softmax(tb.view(bsz, 4, reg_max, anchors) / t, dim=2)
        box_div = (t_logp.exp() * (t_logp - s_logp)).sum(dim=2).mean(dim=1)  # (B, A)
    else:
        box_div = (sb - tb).abs().mean(dim=1)
    box_term = (box_div * weight).sum() / weight.sum().clamp(min=1e-6)
    return (cls_term + box_term) * (t * t)


class DetectionDistillationLoss:
    """Wraps an ultralytics detection criterion and adds distillation from a frozen teacher.

    Called like the wrapped criterion, ``(preds, batch) -> (loss_vector * batch_size, items)``; it appends
    the weighted KD terms (times batch size, as ultralytics scales its losses): ``kd_loss`` (output level,
    modes ``"output"``/``"both"``) and ``fd_loss`` (channel-wise feature distillation on the Detect head's
    inputs, modes ``"feature"``/``"both"``; needs ``taps`` = (student tap, teacher tap) and ``adapters``).
    """

    def __init__(self, base: Any, teacher: nn.Module, weight: float, temperature: float = 1.0, *,
                 mode: str = "output", feature_weight: float = 1.0, feature_temperature: float = 4.0,
                 taps: tuple[Any, Any] | None = None, adapters: nn.Module | None = None) -> None:
        self.base = base
        self.teacher = teacher
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.mode = mode
        self.feature_weight = float(feature_weight)
        self.feature_temperature = float(feature_temperature)
        self.taps = taps
        self.adapters = adapters

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Detection loss plus the distillation terms of ``self.mode`` on ``batch['img']``."""
        loss, items = self.base(preds, batch)
        student = _raw_head_outputs(preds)
        with torch.no_grad():
            teacher = _raw_head_outputs(self.teacher(batch["img"]))
        terms: dict[str, torch.Tensor] = {}
        if self.mode in ("output", "both"):
            terms["kd_loss"] = self.weight * output_distillation_loss(student, teacher, self.temperature)
        if self.mode in ("feature", "both"):
            from modprune.integrations.ultralytics.feature_distill import channel_wise_distillation_loss  # noqa: PLC0415

            s_tap, t_tap = self.taps
            s_feats = self.adapters(s_tap.take()) if self.adapters is not None else s_tap.take()
            terms["fd_loss"] = self.feature_weight * channel_wise_distillation_loss(
                s_feats, t_tap.take(), self.feature_temperature)
        bs = batch["img"].shape[0]
        extra = [(v * bs).reshape(1).to(loss.dtype) for v in terms.values()]
        loss = torch.cat([loss.reshape(-1), *extra])
        return loss, {**items, **{k: v.detach() for k, v in terms.items()}}

    def update(self) -> None:
        """Forward ultralytics' per-epoch criterion update (used by some heads) to the wrapped criterion."""
        if hasattr(self.base, "update"):
            self.base.update()


class DistillationInstaller:
    """Callback (``on_pretrain_routine_end``) that wraps the student's criterion with distillation.

    It runs after ultralytics made its EMA copy, so the EMA (and checkpoints) never hold the teacher, and
    validation losses stay the plain detection losses. Picklable for DDP (module-level class). With a
    feature mode it hooks the Detect layers of student and teacher, builds the width adapters and adds
    them to the optimizer; :meth:`remove` takes the hooks off again (``finetune`` calls it).
    """

    def __init__(self, teacher: nn.Module, weight: float, temperature: float = 1.0, *, mode: str = "output",
                 feature_weight: float = 1.0, feature_temperature: float = 4.0) -> None:
        self.teacher = teacher
        self.weight = weight
        self.temperature = temperature
        self.mode = mode
        self.feature_weight = feature_weight
        self.feature_temperature = feature_temperature
        self.taps: tuple[Any, Any] | None = None
        self.adapters: nn.Module | None = None

    def __call__(self, trainer: Any) -> None:
        """Install :class:`DetectionDistillationLoss` as the trained model's criterion."""
        model = unwrap_model(trainer.model)
        teacher = self.teacher.to(trainer.device).float().eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        base = model.criterion if getattr(model, "criterion", None) is not None else model.init_criterion()
        if isinstance(base, DetectionDistillationLoss):
            base = base.base
        if self.mode in ("feature", "both"):
            self._install_features(trainer, model, teacher)
        model.criterion = DetectionDistillationLoss(
            base, teacher, self.weight, self.temperature, mode=self.mode, feature_weight=self.feature_weight,
            feature_temperature=self.feature_temperature, taps=self.taps, adapters=self.adapters)
        LOG.info("distilling (%s) from a %s teacher (weight %g, temperature %g)", self.mode, type(teacher).__name__,
                 self.weight, self.temperature)

    def _install_features(self, trainer: Any, model: nn.Module, teacher: nn.Module) -> None:
        from modprune.integrations.ultralytics import feature_distill as fd  # noqa: PLC0415

        size = max(64, 2 * int(max(float(s) for s in detect_head(model).stride)))
        widths = fd.probe_widths(model, size), fd.probe_widths(teacher, size)
        self.adapters = fd.FeatureAdapters(*widths).to(trainer.device)
        fd.add_to_optimizer(trainer, list(self.adapters.parameters()))
        self.taps = (fd.FeatureTap(model), fd.FeatureTap(teacher))

    def remove(self) -> None:
        """Remove the feature hooks and drop the adapters (they are not part of the trained model)."""
        for tap in self.taps or ():
            tap.remove()
        self.taps, self.adapters = None, None


class BestStateKeeper:
    """Callback (``on_model_save``) keeping a float32 copy of the EMA weights whenever they are the best so far.

    ultralytics writes ``best.pt`` in half precision at the same moment; this keeps full precision.
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch: int | None = None

    def __call__(self, trainer: Any) -> None:
        """Copy ``trainer.ema.ema``'s state when this epoch's fitness is the best."""
        if trainer.ema is None or trainer.best_fitness != trainer.fitness:
            return
        self.state = {k: v.detach().clone().cpu() for k, v in trainer.ema.ema.state_dict().items()}
        self.epoch = int(trainer.epoch)


class EpochLogger:
    """``on_fit_epoch_end`` callback: one INFO line per epoch (epoch, training losses, fitness, mAP).

    Added when standard output is not a terminal, where ultralytics shows no progress bars: a log
    file then still says how training goes (otherwise minutes of silence per epoch).
    """

    def __call__(self, trainer: Any) -> None:
        epoch, epochs = int(trainer.epoch) + 1, int(trainer.epochs)
        # ultralytics calls this once more after the last epoch, for its validation of best.pt
        parts = [f"epoch {epoch}/{epochs}" if epoch <= epochs else "final validation (best weights)"]
        try:
            losses = trainer.label_loss_items(trainer.tloss) if trainer.tloss is not None else {}
        except Exception:  # noqa: BLE001  (a log line must never stop training)
            losses = {}
        parts += [f"{str(k).split('/')[-1]} {float(v):.4f}" for k, v in dict(losses).items()]
        if trainer.fitness is not None:
            parts.append(f"fitness {float(trainer.fitness):.4f}")
        for key, value in (trainer.metrics or {}).items():
            if str(key).startswith("metrics/mAP"):
                parts.append(f"{str(key).split('/')[-1].replace('(B)', '')} {float(value):.4f}")
        LOG.info("%s", ", ".join(parts))


@dataclass(frozen=True)
class FinetuneOptions:
    """How :func:`finetune` trains; validated at construction (:class:`~modprune.ConfigError`).

    Args:
        epochs: Training epochs (>= 1).
        imgsz: Training image size (>= 32).
        project_dir: Folder for ultralytics' run output (``project_dir/name``: weights, results.csv).
        batch: Batch size (>= 2; BatchNorm needs more than one image).
        name: Run name inside ``project_dir``; an existing run of that name is overwritten.
        distill_weight: Weight of the distillation term (> 0; used with a teacher).
        distill_temperature: Softening temperature of the distillation term (> 0).
        keep_zeros: Without explicit masks, hold every weight that is exactly zero now at zero
            (:func:`zero_masks`). Set False to let pruned weights regrow.
        seed: Training seed.
        workers: Dataloader workers (ultralytics uses 0 on CPU).
        device: ``"cpu"``, ``"0"``, ``"0,1"`` (DDP)...
        lr0: Initial learning rate (ultralytics' default when None; with ``optimizer="auto"`` it picks
            its own).
        optimizer: ultralytics optimizer name (``"auto"``, ``"SGD"``, ``"AdamW"``...).
        nominal_batch: Images per optimizer step (ultralytics' ``nbs``; its default of 64 when None):
            gradients accumulate over ``round(nominal_batch / batch)`` batches (at least one) before each
            step (warm-up ramps the accumulation up from 1), and weight decay is scaled by ``batch *
            accumulation / nominal_batch``. At the default a short fine-tuning takes few steps: 5 epochs of
            256 images at batch 16 are 80 batches but 31 optimizer steps. ``nominal_batch=batch`` steps
            after every batch.
        amp: Mixed precision on GPU. ``True`` runs ultralytics' AMP self-check, which downloads
            ``yolo26n.pt`` (a network attempt); ``"bf16"`` skips the check. Ignored on CPU.
        plots: Let ultralytics save plots.
        patience: Epochs without improvement before early stopping (ultralytics' default when None).
        resume: Continue the interrupted run ``project_dir/name`` from its ``weights/last.pt`` (optimizer,
            EMA and epoch restored; the checkpoint is read with modprune's restricted loader).
        reset_head: When the model's (or teacher's) class count differs from the dataset's, re-initialise the
            detection head's class outputs for the dataset's classes instead of raising (box outputs and
            the rest of the model are kept; a teacher with other classes is refused either way).
        overrides: Any other ultralytics training argument (e.g. ``{"close_mosaic": 2}``), except those
            :func:`finetune` sets itself; keys are checked against ultralytics' configuration keys.
        offline: Call :func:`~modprune.integrations.ultralytics.offline.ensure_offline` first.
        verbose: Let ultralytics log its progress.
        distill: What a teacher distils (used with a teacher): ``"output"`` (head outputs), ``"feature"``
            (channel-wise distillation of the Detect head's input maps, Shu et al., ICCV 2021, with learned
            1x1 adapters where widths differ) or ``"both"``.
        feature_weight: Weight of the feature distillation term (> 0).
        feature_temperature: Spatial softmax temperature of the feature term (> 0; CWD uses 4).
    """

    epochs: int
    imgsz: int
    project_dir: str | os.PathLike[str]
    batch: int = 16
    name: str = "finetune"
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    keep_zeros: bool = True
    seed: int = 0
    workers: int = 0
    device: str = "cpu"
    lr0: float | None = None
    optimizer: str = "auto"
    nominal_batch: int | None = None
    amp: bool | str = False
    plots: bool = False
    patience: int | None = None
    resume: bool = False
    reset_head: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    offline: bool = True
    verbose: bool = False
    distill: str = "output"
    feature_weight: float = 1.0
    feature_temperature: float = 4.0

    def __post_init__(self) -> None:
        _check_finetune_args(epochs=self.epochs, imgsz=self.imgsz, batch=self.batch,
                             distill_weight=self.distill_weight, distill_temperature=self.distill_temperature,
                             seed=self.seed, workers=self.workers, name=self.name, overrides=self.overrides,
                             lr0=self.lr0)
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int)
                                          or self.patience < 1):
            raise ConfigError(f"patience={self.patience!r} must be an integer >= 1 or None", obj=self.patience)
        if self.nominal_batch is not None and (isinstance(self.nominal_batch, bool)
                                               or not isinstance(self.nominal_batch, int) or self.nominal_batch < 1):
            raise ConfigError(f"nominal_batch={self.nominal_batch!r} must be an integer >= 1 or None",
                              obj=self.nominal_batch)
        if self.nominal_batch is not None and "nbs" in (self.overrides or {}):
            raise ConfigError("nominal_batch and overrides['nbs'] both set ultralytics' nbs; keep one (nominal_batch)",
                              obj=self.overrides)
        if self.lr0 is not None and str(self.optimizer).lower() == "auto":
            raise ConfigError(f"lr0={self.lr0!r} would be ignored: optimizer='auto' lets ultralytics pick both the "
                              "optimizer and its learning rate; name an optimizer (optimizer='SGD', on the command "
                              "line --optimizer SGD) to set lr0", obj=self.lr0)
        check_train_overrides(self.overrides or {})
        object.__setattr__(self, "overrides", types.MappingProxyType(dict(self.overrides or {})))
        _check_distill_args(self.distill, self.feature_weight, self.feature_temperature)

    def train_args(self, data_yaml: Path) -> dict[str, Any]:
        """ultralytics training arguments for ``data_yaml``."""
        project = Path(self.project_dir).expanduser().resolve()  # absolute: ultralytics puts relative ones elsewhere
        args = {
            **dict(self.overrides),
            "model": MODEL_PLACEHOLDER, "data": str(data_yaml), "epochs": int(self.epochs), "imgsz": int(self.imgsz),
            "batch": int(self.batch), "seed": int(self.seed), "workers": int(self.workers), "device": str(self.device),
            "project": str(project), "name": self.name, "exist_ok": True, "optimizer": self.optimizer,
            "amp": self.amp, "plots": self.plots, "verbose": self.verbose, "pretrained": False,
        }
        if self.lr0 is not None:
            args["lr0"] = float(self.lr0)
        if self.nominal_batch is not None:
            args["nbs"] = int(self.nominal_batch)
        if self.patience is not None:
            args["patience"] = int(self.patience)
        if self.resume:
            args["resume"] = str(project / self.name / "weights" / "last.pt")
        args.setdefault("deterministic", True)  # same seed, same machine -> same weights (see docs/results.md)
        return args


def _distillation(teacher: nn.Module | None, options: FinetuneOptions) -> DistillationInstaller | None:
    """The callback that installs distillation from ``teacher`` (None without a teacher)."""
    if teacher is None:
        return None
    return DistillationInstaller(teacher, options.distill_weight, options.distill_temperature, mode=options.distill,
                                 feature_weight=options.feature_weight, feature_temperature=options.feature_temperature)


def finetune(
    model: nn.Module,
    data_yaml: str | os.PathLike[str],
    options: FinetuneOptions,
    *,
    teacher: nn.Module | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Fine-tune a (pruned) ultralytics ``DetectionModel`` on a YOLO dataset; return it in float32.

    The caller's ``model`` is not modified: a copy is trained and returned (same architecture and
    parameter count, the best epoch's EMA weights, eval mode, float32).

    Args:
        model: The ultralytics ``DetectionModel`` to fine-tune (any pruned variant).
        data_yaml: Dataset ``data.yaml`` (class count must match the model's head).
        options: How to train (:class:`FinetuneOptions`).
        teacher: Optional teacher ``DetectionModel`` (same classes, strides and reg_max) for output-level
            distillation; it is not trained, but it is moved to the device, cast to float32 and put in
            eval mode.
        masks: Explicit keep-masks ``{param_name: bool tensor}`` (False = hold at zero).

    Raises:
        UnsupportedModelError: ``model`` or ``teacher`` is not an ultralytics detection model.
        ConfigError: an argument is invalid or the class counts disagree.
        DatasetError: the dataset is missing or malformed.
    """
    if not isinstance(options, FinetuneOptions):
        raise ConfigError(f"finetune() needs FinetuneOptions, got {type(options).__name__}", obj=options)
    if options.offline:
        from modprune.integrations.ultralytics.offline import ensure_offline  # noqa: PLC0415

        ensure_offline()
    yaml_path, nc = _check_inputs(model, data_yaml, teacher, options.reset_head)
    _check_resume(options, yaml_path)
    work = copy.deepcopy(model).float()
    if int(detect_head(work).nc) != nc:
        reset_head(work, nc)
    work.criterion = None  # never reuse a criterion built for another model state
    keep = _check_masks(work, masks) if masks is not None else (zero_masks(work) if options.keep_zeros else {})
    n_params = sum(p.numel() for p in work.parameters())
    best = BestStateKeeper()
    from modprune.integrations.ultralytics.dataset_guard import guarded_datasets  # noqa: PLC0415

    with quiet_ultralytics(options.verbose), guarded_datasets():  # the dataset is an input: never unpickled or written
        trainer = PrunedModelTrainer(overrides=options.train_args(yaml_path), model=work)
        installer = _add_callbacks(trainer, keep, _distillation(teacher, options), best)
        try:
            trainer.train()
        finally:
            installer is not None and installer.remove()  # the teacher's hooks and adapters go either way
    _load_best(work, trainer, best, keep, n_params)
    LOG.info("fine-tuned %d epochs (best epoch %s); run saved under %s", options.epochs,
             None if best.epoch is None else best.epoch + 1, trainer.save_dir)
    return work


def _add_callbacks(trainer: Any, keep: Mapping[str, torch.Tensor], installer: DistillationInstaller | None,
                   best: BestStateKeeper) -> DistillationInstaller | None:
    """Masks held at zero, distillation, the best epoch's state and (no terminal) one line per epoch."""
    if keep:
        trainer.add_callback("on_pretrain_routine_end", MaskKeeper(keep))
    if installer is not None:
        trainer.add_callback("on_pretrain_routine_end", installer)
    trainer.add_callback("on_model_save", best)
    if not sys.stdout.isatty():  # no progress bars then: one line per epoch instead
        trainer.add_callback("on_fit_epoch_end", EpochLogger())
    return installer


def _check_resume(options: FinetuneOptions, yaml_path: Path) -> None:
    """ConfigError when ``options.resume`` names a run that left no ``last.pt``."""
    if options.resume and not Path(options.train_args(yaml_path)["resume"]).is_file():
        raise ConfigError(f"nothing to resume: {options.train_args(yaml_path)['resume']!r} does not exist; use the "
                          "project_dir and name of the interrupted run", obj=options.name)


def _check_inputs(model: nn.Module, data_yaml: str | os.PathLike[str], teacher: nn.Module | None,
                  allow_reset: bool = False) -> tuple[Path, int]:
    """The resolved dataset yaml and its class count, after checking the dataset and the heads."""
    head = detect_head(model)
    from modprune.data import check_dataset  # noqa: PLC0415

    yaml_path = Path(data_yaml).expanduser().resolve()
    summary = check_dataset(yaml_path)
    if int(head.nc) != summary.nc and not allow_reset:
        raise ConfigError(f"the model predicts {int(head.nc)} classes but {str(yaml_path)!r} has {summary.nc}; "
                          "re-initialise the head for the dataset's classes (FinetuneOptions(reset_head=True), CLI "
                          "--reset-head) or fine-tune on a dataset with the model's classes", obj=head.nc)
    if teacher is not None:
        t_head = detect_head(teacher)
        if int(t_head.nc) != summary.nc:
            raise ConfigError(f"the teacher predicts {int(t_head.nc)} classes but {str(yaml_path)!r} has "
                              f"{summary.nc}; distil from a teacher trained on the dataset's classes", obj=teacher)
        if getattr(t_head, "reg_max", None) != getattr(head, "reg_max", None):
            raise ConfigError(f"teacher head (reg_max={getattr(t_head, 'reg_max', None)}) does not match the "
                              f"student's (reg_max={getattr(head, 'reg_max', None)})", obj=teacher)
    return yaml_path, summary.nc


def reset_head(model: nn.Module, nc: int) -> nn.Module:
    """Re-initialise a Detect head's class outputs for ``nc`` classes, in place; returns ``model``.

    Each class branch's final convolution (``cv3[i][-1]``, and ``one2one_cv3`` of end-to-end heads) is
    replaced by a fresh one with ``nc`` outputs and ultralytics' prior bias; box branches, DFL and the
    rest of the model keep their weights. ``model.yaml['nc']`` and ``model.names`` follow.
    """
    head = detect_head(model)
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ConfigError(f"nc={nc!r} must be an integer >= 1", obj=nc)
    for attr in ("cv3", "one2one_cv3"):
        branches = getattr(head, attr, None)
        if branches is None:
            continue
        for i, branch in enumerate(branches):
            old = branch[-1]
            if not isinstance(old, nn.Conv2d):
                raise UnsupportedModelError(f"{type(head).__name__}.{attr}[{i}] ends in {type(old).__name__}, not a "
                                            "Conv2d; reset_head handles ultralytics Detect heads", obj=old)
            new = nn.Conv2d(old.in_channels, nc, old.kernel_size, old.stride, old.padding, bias=True)
            stride = float(head.stride[i]) if head.stride[i] > 0 else 8.0 * 2**i
            with torch.no_grad():
                new.bias.fill_(math.log(5 / nc / (640 / stride) ** 2))
            branch[-1] = new.to(old.weight.device, old.weight.dtype)
    head.nc, head.no = nc, nc + head.reg_max * 4
    if isinstance(getattr(model, "yaml", None), dict):
        model.yaml["nc"] = nc
    model.names = {i: f"class{i}" for i in range(nc)}
    LOG.info("re-initialised the detection head for %d classes", nc)
    return model


def default_runs_dir() -> Path:
    """Where ``modprune finetune`` writes its runs by default: ``<ultralytics runs_dir>/modprune`` (the
    user's ultralytics ``runs_dir`` setting; persistent, so an interrupted run can be resumed)."""
    from ultralytics.utils import RUNS_DIR  # noqa: PLC0415

    return Path(RUNS_DIR) / "modprune"


def check_train_overrides(overrides: Mapping[str, Any]) -> None:
    """Raise ConfigError for a key that is no ultralytics training argument, naming the closest ones."""
    import difflib  # noqa: PLC0415

    from ultralytics.cfg import DEFAULT_CFG_DICT  # noqa: PLC0415

    for key in overrides:
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(str(key), list(DEFAULT_CFG_DICT), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{key!r} is not an ultralytics training argument{hint}; see "
                              "https://docs.ultralytics.com/usage/cfg/", obj=key)


def _load_best(work: nn.Module, trainer: Any, best: BestStateKeeper, keep: Mapping[str, torch.Tensor],
               n_params: int) -> None:
    """Load the best epoch's float32 EMA weights into ``work`` (eval mode), masks re-applied."""
    state = best.state if best.state is not None else _state_from_checkpoint(Path(trainer.best), Path(trainer.last))
    work.criterion = None
    work.load_state_dict(state)
    work.float().eval()
    _reapply_masks(work, keep)
    n_after = sum(p.numel() for p in work.parameters())
    if n_after != n_params:  # pragma: no cover - would mean ultralytics rebuilt the model
        raise ModpruneError(f"fine-tuning changed the parameter count ({n_params} -> {n_after}); please report "
                            "this with your ultralytics version", obj=n_after)


def _state_from_checkpoint(best: Path, last: Path) -> dict[str, torch.Tensor]:
    """Float32 EMA state from the run's own ``best.pt`` (else ``last.pt``); used after DDP training."""
    path = best if best.exists() else last
    if not path.exists():
        raise ModelLoadError(f"training finished without a checkpoint in {str(best.parent)!r}; check the "
                             "ultralytics log (save=False?)", obj=path)
    from modprune.serialization import load_file  # noqa: PLC0415 - weights-only, plugin allowlist

    ckpt = load_file(path)
    module = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    return {k: v.float() if v.is_floating_point() else v for k, v in module.state_dict().items()}


def _reapply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked entries (a no-op after a clean run; guards against half-precision round trips)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].masked_fill_(~keep.to(params[name].device), 0.0)


def _check_finetune_args(*, epochs: Any, imgsz: Any, batch: Any, distill_weight: Any, distill_temperature: Any,
                         seed: Any, workers: Any, name: Any, overrides: Any, lr0: Any) -> None:
    """Raise ConfigError for an invalid fine-tuning argument."""
    for arg, value, lo in (("epochs", epochs, 1), ("imgsz", imgsz, 32), ("batch", batch, 2), ("seed", seed, 0),
                           ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{arg}={value!r} must be an integer >= {lo}", obj=value)
    for arg, value in (("distill_weight", distill_weight), ("distill_temperature", distill_temperature)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{arg}={value!r} must be a positive number", obj=value)
    if lr0 is not None and (isinstance(lr0, bool) or not isinstance(lr0, (int, float)) or not lr0 > 0):
        raise ConfigError(f"lr0={lr0!r} must be a positive number or None", obj=lr0)
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ConfigError(f"name={name!r} must be a plain folder name (no path separators)", obj=name)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"overrides must be a mapping of ultralytics arguments, got {type(overrides).__name__}",
                              obj=overrides)
        bad = sorted(set(overrides) & _RESERVED_ARGS)
        if bad:
            raise ConfigError(f"overrides may not set {bad}: finetune() sets them; use FinetuneOptions' fields",
                              obj=bad)


def _check_distill_args(mode: Any, feature_weight: Any, feature_temperature: Any) -> None:
    """Raise ConfigError for an invalid distillation mode or feature weight/temperature."""
    if mode not in ("output", "feature", "both"):
        raise ConfigError(f"distill={mode!r} must be one of 'output', 'feature', 'both'", obj=mode)
    for arg, value in (("feature_weight", feature_weight), ("feature_temperature", feature_temperature)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{arg}={value!r} must be a positive number", obj=value)
