"""Feature-level distillation on the neck's feature maps (the inputs of the Detect head).

Method: channel-wise knowledge distillation (CWD), Shu, Liu, Gao, Yan and Shen, "Channel-wise Knowledge
Distillation for Dense Prediction", ICCV 2021 (arXiv:2011.13256). Each channel's activation map is
turned into a distribution over spatial locations with a softmax at temperature ``T``; the loss is the
KL divergence from the teacher's to the student's per-channel distribution, times ``T**2``, averaged over
channels (and batch) and over the feature levels. It is exactly zero when the maps agree.

Where the student is narrower than the teacher (structured pruning removed channels of the neck), a learned
1x1 convolution per level maps the student's width to the teacher's (:class:`FeatureAdapters`); levels
whose widths already agree get no adapter (identity). The adapters train with the student (their
parameters are added to the optimizer) and are thrown away after training: the fine-tuned model never
contains them.

The feature maps are captured with forward pre-hooks on the Detect layer (``model.model[-1]``) of student
and teacher (:class:`FeatureTap`); the hooks are removed after training.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modprune.exceptions import ConfigError
from modprune.integrations.ultralytics.validate import detect_head

__all__ = ["DISTILL_MODES", "FeatureAdapters", "FeatureTap", "add_to_optimizer", "channel_wise_distillation_loss",
           "probe_widths"]

LOG = logging.getLogger(__name__)
DISTILL_MODES = ("output", "feature", "both")


def channel_wise_distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                                   temperature: float = 4.0) -> torch.Tensor:
    """CWD loss (Shu et al., ICCV 2021) between lists of (B, C, H, W) maps of equal shapes, mean over levels.

    The teacher's maps are detached. Per level: ``T**2 * mean_{b,c} KL(softmax(t_bc / T) || softmax(s_bc / T))``
    with the softmax over the ``H*W`` locations.
    """
    if len(student) != len(teacher) or not student:
        raise ConfigError(f"student has {len(student)} feature levels, teacher {len(teacher)}; distil between "
                          "detectors with the same head levels", obj=(len(student), len(teacher)))
    t = float(temperature)
    total = student[0].new_zeros(())
    for s_map, t_map in zip(student, teacher):
        if s_map.shape != t_map.shape:
            raise ConfigError(f"feature maps differ in shape: student {tuple(s_map.shape)}, teacher "
                              f"{tuple(t_map.shape)} (adapters map widths; sizes must agree)", obj=tuple(s_map.shape))
        s_flat = s_map.flatten(2) / t  # (B, C, HW)
        t_flat = t_map.detach().to(s_map.dtype).flatten(2) / t
        t_logp = F.log_softmax(t_flat, dim=2)
        kl = (t_logp.exp() * (t_logp - F.log_softmax(s_flat, dim=2))).sum(dim=2)  # (B, C)
        total = total + kl.mean() * (t * t)
    return total / len(student)


class FeatureTap:
    """A forward pre-hook on a model's Detect layer that keeps the list of feature maps it last received."""

    def __init__(self, model: nn.Module) -> None:
        self.features: list[torch.Tensor] | None = None
        self.handle = detect_head(model).register_forward_pre_hook(self._capture)

    def _capture(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        feats = args[0] if args else None
        self.features = list(feats) if isinstance(feats, (list, tuple)) else None

    def take(self) -> list[torch.Tensor]:
        """The captured maps (cleared, so a stale capture is never reused)."""
        feats, self.features = self.features, None
        if feats is None:
            raise ConfigError("no feature maps were captured from the Detect layer; feature distillation needs an "
                              "ultralytics head that receives a list of maps", obj=feats)
        return feats

    def remove(self) -> None:
        """Remove the hook."""
        self.handle.remove()


class FeatureAdapters(nn.Module):
    """One 1x1 convolution per level mapping student width to teacher width (identity where they agree)."""

    def __init__(self, student_widths: Sequence[int], teacher_widths: Sequence[int]) -> None:
        super().__init__()
        if len(student_widths) != len(teacher_widths):
            raise ConfigError(f"student has {len(student_widths)} feature levels, teacher {len(teacher_widths)}",
                              obj=(list(student_widths), list(teacher_widths)))
        self.maps = nn.ModuleList(
            nn.Identity() if s == t else nn.Conv2d(int(s), int(t), 1) for s, t in zip(student_widths, teacher_widths)
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Student maps mapped to the teacher's widths."""
        return [m(f) for m, f in zip(self.maps, feats)]


@torch.no_grad()
def probe_widths(model: nn.Module, imgsz: int = 64) -> list[int]:
    """Channel widths of the Detect layer's input maps, from one forward on zeros (mode restored)."""
    tap = FeatureTap(model)
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, 3, imgsz, imgsz, device=param.device, dtype=param.dtype))
        return [int(f.shape[1]) for f in tap.take()]
    finally:
        tap.remove()
        model.train(was_training)


def add_to_optimizer(trainer: Any, params: list[nn.Parameter]) -> None:
    """Add ``params`` (the adapters') as a new group of ultralytics' optimizer, scheduled like the others."""
    if not params:
        return
    opt = trainer.optimizer
    template = next((g for g in opt.param_groups if g.get("param_group") not in {"muon"}), opt.param_groups[0])
    group = {k: v for k, v in template.items() if k != "params"}
    group.update(params=params, weight_decay=0.0, param_group="adapter")
    group.setdefault("initial_lr", group.get("lr", trainer.args.lr0))
    opt.add_param_group(group)
    sched = getattr(trainer, "scheduler", None)
    if sched is not None and hasattr(sched, "base_lrs") and hasattr(sched, "lr_lambdas"):
        sched.base_lrs.append(group["initial_lr"])
        sched.lr_lambdas.append(sched.lr_lambdas[0])
    LOG.info("training %d adapter parameters with the student", sum(p.numel() for p in params))
