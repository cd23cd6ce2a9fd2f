"""Unstructured pruning: zero individual weights, per-category ratios scaled to an exact target."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from modprune.config import PruneConfig
from modprune.exceptions import UnreachableTargetError
from modprune.importance.base import WEIGHTS
from modprune.measure import count_nonzero
from modprune.measure.walk import effective_parameters
from modprune.pruners.allocation import allocate
from modprune.pruners.base import PruneContext, Pruner
from modprune.pruners.masks import make_permanent, set_mask

__all__ = ["UnstructuredPruner", "prunable_slots"]

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One weight tensor that may be pruned."""

    name: str
    module: nn.Module
    attr: str
    category: str
    tensor: torch.Tensor

    @property
    def leaf(self) -> torch.Tensor:
        """The stored parameter (the parametrization's ``original`` when masked); it holds ``.grad``."""
        if parametrize.is_parametrized(self.module, self.attr):
            return self.module.parametrizations[self.attr].original
        return self.tensor


def prunable_slots(model: nn.Module, ctx: PruneContext, config: PruneConfig) -> list[Slot]:
    """Weight tensors (2-D and up: conv/linear kernels) of categories with a positive ratio.

    Biases and norm parameters are never zeroed; they still count in the target's denominator.
    """
    modules = dict(model.named_modules())
    slots = []
    for name, tensor in effective_parameters(model):
        category = ctx.categories.params.get(name) or ctx.categories.params.get(_original_name(name))
        if tensor.ndim < 2 or category is None or config.ratio_for(category) <= 0:
            continue
        owner, _, attr = name.rpartition(".")
        slots.append(Slot(name, modules[owner], attr, category, tensor))
    return slots


def _original_name(name: str) -> str:
    owner, _, attr = name.rpartition(".")
    prefix = f"{owner}." if owner else ""
    return f"{prefix}parametrizations.{attr}.original"


class UnstructuredPruner(Pruner):
    """Zeroes the lowest-scoring weights until exactly ``target`` of the nonzero parameters are zero."""

    name = "unstructured"
    requires = WEIGHTS
    description = "zero individual weights (masks); smaller files, not faster dense inference"

    def prune(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> None:
        start = count_nonzero(model)
        for step in range(1, config.steps + 1):
            goal = round(config.target * step / config.steps * start)
            want = goal - (start - count_nonzero(model))
            if want > 0:
                if ctx.importance.needs_gradients:
                    ctx.compute_gradients(model)
                self._step(model, config, ctx, want)
            if ctx.on_step is not None:
                ctx.on_step(step, config.steps, model)
        if config.permanent:
            make_permanent(model)
        model.zero_grad(set_to_none=True)

    def _step(self, model: nn.Module, config: PruneConfig, ctx: PruneContext, want: int) -> None:
        slots = prunable_slots(model, ctx, config)
        sctx = ctx.score_context(model)
        scores: dict[str, torch.Tensor] = {}
        nonzero: dict[str, int] = {}
        with torch.no_grad():
            for s in slots:
                sc = ctx.importance.weight_scores(s.leaf, sctx).detach().float().flatten()
                alive = s.tensor.detach().flatten() != 0
                scores[s.name] = torch.where(alive, sc, torch.inf)  # zeros are never chosen again
                nonzero[s.name] = int(alive.sum())
            chosen = self._choose(slots, scores, nonzero, config, want)
            for s in slots:
                if s.name in chosen:
                    keep = ~chosen[s.name].view_as(s.tensor) & (s.tensor != 0)
                    self._apply(s, keep, config)

    @staticmethod
    def _apply(slot: Slot, keep: torch.Tensor, config: PruneConfig) -> None:
        param = getattr(slot.module, slot.attr)
        is_plain = isinstance(param, nn.Parameter) and param is slot.module._parameters.get(slot.attr)
        if config.permanent and is_plain:
            param.mul_(keep)
        else:
            set_mask(slot.module, slot.attr, keep)

    def _choose(
        self,
        slots: list[Slot],
        scores: dict[str, torch.Tensor],
        nonzero: dict[str, int],
        config: PruneConfig,
        want: int,
    ) -> dict[str, torch.Tensor]:
        """Boolean "prune this element" masks (flat) per slot name, ``want`` elements in all."""
        try:
            if config.scope == "global":
                return _lowest(scores, want)
            cat_sizes: dict[str, int] = {}
            for s in slots:
                cat_sizes[s.category] = cat_sizes.get(s.category, 0) + nonzero[s.name]
            per_cat = allocate(cat_sizes, {c: config.ratio_for(c) for c in cat_sizes}, want, config.max_ratio)
        except UnreachableTargetError as exc:
            raise UnreachableTargetError(
                f"target {config.target} is unreachable: {exc}; protected categories: "
                f"{', '.join(config.protect) or 'none'}. Lower the target, raise max_ratio or protect less",
                config.target,
            ) from None
        chosen: dict[str, torch.Tensor] = {}
        for category, count in per_cat.items():
            members = [s.name for s in slots if s.category == category]
            if config.scope == "category":
                chosen.update(_lowest({n: scores[n] for n in members}, count))
                continue
            per_layer = allocate({n: nonzero[n] for n in members}, {n: 1.0 for n in members}, count)
            for n in members:
                chosen.update(_lowest({n: scores[n]}, per_layer[n]))
        return chosen


def _lowest(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Flat boolean masks marking the ``k`` lowest scores over all the given tensors together.

    Ties are broken deterministically (same input, same selection).
    """
    if k <= 0 or not scores:
        return {}
    names = list(scores)
    flat = scores[names[0]] if len(names) == 1 else torch.cat([scores[n] for n in names])
    picked = torch.zeros(flat.numel(), dtype=torch.bool)
    picked[torch.topk(flat, k, largest=False, sorted=False).indices] = True
    return dict(zip(names, torch.split(picked, [scores[n].numel() for n in names])))
