"""Unstructured pruning: zero individual weights, per-category ratios scaled to an exact target.

The whole schedule is planned before anything changes (so an unreachable target leaves the model
untouched): the final number of weights to zero, per category (``layer``/``category`` scope) and per
layer (``layer`` scope), is computed once from the nonzero counts at the start, with ``max_ratio``
capping every category and every layer relative to those counts. Step ``k`` of ``steps`` then zeroes
weights until ``k / steps`` of each planned count is reached, re-scoring the weights each step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from modprune.config import PruneConfig
from modprune.exceptions import ConfigError, ModpruneError, UnreachableTargetError
from modprune.importance.base import WEIGHTS
from modprune.measure.walk import effective_parameters
from modprune.pruners.allocation import allocate
from modprune.pruners.base import PruneContext, PruneOutcome, PrunePlan, Pruner
from modprune.pruners.masks import WeightMask, make_permanent, set_mask
from modprune.pruners.structured_setup import protected_subtrees

__all__ = ["UnstructuredOptions", "UnstructuredPlan", "UnstructuredPruner", "prunable_slots"]

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One weight tensor that may be pruned."""

    name: str
    module: nn.Module
    attr: str
    category: str
    tensor: torch.Tensor
    nonzero: int = 0  # nonzero elements of ``tensor`` when the slot was found

    @property
    def only_masks(self) -> bool:
        """Whether the weight is plain or parametrized by :class:`WeightMask` es only."""
        if not parametrize.is_parametrized(self.module, self.attr):
            return True
        return all(isinstance(p, WeightMask) for p in self.module.parametrizations[self.attr])

    @property
    def leaf(self) -> torch.Tensor:
        """The stored parameter (the parametrization's ``original`` when masked); it holds ``.grad``."""
        if parametrize.is_parametrized(self.module, self.attr):
            original = getattr(self.module.parametrizations[self.attr], "original", None)
            return original if isinstance(original, torch.Tensor) else self.tensor
        return self.tensor


def prunable_slots(model: nn.Module, ctx: PruneContext, config: PruneConfig) -> list[Slot]:
    """Weight tensors (2-D and up: conv/linear kernels) of categories with a positive ratio.

    Biases, norm parameters, modules named by ``config.protect_modules`` and frozen tensors (``requires_grad=False``; unless the whole model is
    frozen, like an EMA checkpoint) are never zeroed; they still count in the target's denominator.
    """
    return _walk(model, ctx, config)[0]


def _walk(model: nn.Module, ctx: PruneContext, config: PruneConfig) -> tuple[list[Slot], int]:
    """The prunable slots and the nonzero count of the whole model, in one pass."""
    modules = dict(model.named_modules())
    # A frozen weight next to trainable ones is deliberately fixed (e.g. ultralytics' DFL projection)
    # and never pruned. A model frozen as a whole (an EMA or inference copy) says nothing: prune it.
    skip_frozen = any(p.requires_grad for p in model.parameters())
    slots = []
    total = 0
    with torch.no_grad():
        for name, tensor in effective_parameters(model):
            nonzero = int(torch.count_nonzero(tensor))
            total += nonzero
            category = ctx.categories.params.get(name) or ctx.categories.params.get(_original_name(name))
            if tensor.ndim < 2 or category is None or config.ratio_for(category) <= 0:
                continue
            owner, _, attr = name.rpartition(".")
            if config.protect_modules and config.protects_module(owner):
                continue
            if skip_frozen and not _trainable(modules[owner], attr):  # a fixed projection: never pruned
                continue
            slots.append(Slot(name, modules[owner], attr, category, tensor, nonzero))
    return slots, total


def _trainable(module: nn.Module, attr: str) -> bool:
    if parametrize.is_parametrized(module, attr):
        original = getattr(module.parametrizations[attr], "original", None)
        return original is None or original.requires_grad
    return getattr(module, attr).requires_grad


def _original_name(name: str) -> str:
    owner, _, attr = name.rpartition(".")
    prefix = f"{owner}." if owner else ""
    return f"{prefix}parametrizations.{attr}.original"


@dataclass
class _Plan:
    """How many elements each category and layer loses in all, from the counts at the start."""

    total: int  # nonzero parameters of the whole model at the start
    final: int  # elements to remove in all
    start: dict[str, int]  # nonzero per slot at the start
    limit: dict[str, int]  # the most each slot may lose (max_ratio of its start)
    category: dict[str, str]  # slot -> category
    per_category: dict[str, int]  # final removals per category (layer/category scope)
    per_slot: dict[str, int]  # final removals per slot (layer scope)

    @classmethod
    def make(cls, slots: list[Slot], total: int, config: PruneConfig) -> _Plan:
        start = {s.name: s.nonzero for s in slots}
        limit = {n: math.floor(config.max_ratio * c) for n, c in start.items()}
        plan = cls(total, round(config.target * total), start, limit, {s.name: s.category for s in slots}, {}, {})
        try:
            plan.per_category, plan.per_slot = plan.split(plan.final, config)
        except UnreachableTargetError as exc:
            raise UnreachableTargetError(
                f"target {config.target} is unreachable: {exc}; protected categories: "
                f"{', '.join(config.protect) or 'none'}. Lower the target, raise max_ratio or protect less",
                config.target,
            ) from None
        return plan

    def split(self, want: int, config: PruneConfig) -> tuple[dict[str, int], dict[str, int]]:
        """Removals per category and per slot (as the scope needs) for ``want`` in all."""
        if config.scope == "global":
            if sum(self.limit.values()) < want:
                raise UnreachableTargetError(
                    f"cannot remove {want} elements: the unprotected layers hold at most "
                    f"{sum(self.limit.values())} removable ones (max_ratio {config.max_ratio})",
                    want,
                )
            return {}, {}
        sizes: dict[str, int] = {}
        limits: dict[str, int] = {}
        for n, c in self.start.items():
            cat = self.category[n]
            sizes[cat] = sizes.get(cat, 0) + c
            limits[cat] = limits.get(cat, 0) + self.limit[n]
        ratios = {c: config.ratio_for(c) for c in sizes}
        per_category = allocate(sizes, ratios, want, config.max_ratio, limits=limits)
        per_slot: dict[str, int] = {}
        if config.scope == "layer":
            for cat, count in per_category.items():
                members = [n for n in self.start if self.category[n] == cat]
                per_slot.update(
                    allocate({n: self.start[n] for n in members}, {n: 1.0 for n in members}, count,
                             limits={n: self.limit[n] for n in members})
                )
        return per_category, per_slot


@dataclass(frozen=True)
class UnstructuredOptions:
    """``pruner_options`` of :class:`UnstructuredPruner`.

    :param permanent: bake the zeros into the weights (True) or keep masks as parametrizations
        that stay applied through fine-tuning (False).
    """

    permanent: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.permanent, bool):
            raise ConfigError(f"pruner_options permanent must be true or false, got {self.permanent!r}", self.permanent)


@dataclass(frozen=True)
class UnstructuredPlan(PrunePlan):
    """The weights found at the start and the removals planned from their counts."""

    slots: list[Slot] = field(default_factory=list)
    total: int = 0
    counts: _Plan | None = None


class UnstructuredPruner(Pruner):
    """Zeroes the lowest-scoring weights until exactly ``target`` of the nonzero parameters are zero."""

    name = "unstructured"
    requires = WEIGHTS
    description = "zero individual weights (masks); smaller files, not faster dense inference"
    target_kinds = ("nonzero",)
    options_type = UnstructuredOptions

    def plan(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> UnstructuredPlan:
        """Walk the model once and plan every removal; raises :class:`UnreachableTargetError`."""
        options = self.parse_options(config.pruner_options)
        protected_subtrees(model, config)  # a protect_modules pattern matching nothing raises
        slots, total = _walk(model, ctx, config)
        return UnstructuredPlan(config, options, slots, total, _Plan.make(slots, total, config))

    def apply(self, model: nn.Module, plan: PrunePlan, ctx: PruneContext) -> PruneOutcome:
        if not isinstance(plan, UnstructuredPlan) or plan.counts is None:
            raise ModpruneError(f"unstructured pruner got a plan it did not make: {type(plan).__name__}", plan)
        config, permanent, notes = plan.config, plan.options.permanent, []
        slots, total = plan.slots, plan.total
        # Several steps (possibly with fine-tuning in between) keep masks until the end, so a
        # pruned weight cannot grow back; one permanent step writes the zeros directly.
        use_masks = not permanent or config.steps > 1
        try:
            for step in range(1, config.steps + 1):
                if step > 1:
                    slots, total = _walk(model, ctx, config)
                if plan.counts.final > 0:
                    if ctx.importance.needs_gradients:
                        ctx.compute_gradients(model)
                    notes += self._step(model, slots, total, plan.counts, config, ctx, step, use_masks)
                if ctx.on_step is not None:
                    ctx.on_step(step, config.steps, model)
            if permanent:
                make_permanent(model)
        finally:
            if ctx.importance.needs_gradients:
                model.zero_grad(set_to_none=True)
        return PruneOutcome(notes=tuple(notes))

    def _step(
        self,
        model: nn.Module,
        slots: list[Slot],
        total: int,
        plan: _Plan,
        config: PruneConfig,
        ctx: PruneContext,
        step: int,
        use_masks: bool,
    ) -> list[str]:
        """One step; returns notes for the report."""
        notes: list[str] = []
        sctx = ctx.score_context(model)
        scores: dict[str, torch.Tensor] = {}
        alive: dict[str, torch.Tensor] = {}
        removed: dict[str, int] = {}
        with torch.no_grad():
            for s in slots:
                if s.name not in plan.start:
                    continue
                raw = ctx.importance.weight_scores(s.leaf, sctx)
                if not isinstance(raw, torch.Tensor) or raw.shape != s.tensor.shape:
                    raise ModpruneError(
                        f"importance {ctx.importance.name!r} returned scores of shape "
                        f"{getattr(raw, 'shape', type(raw).__name__)} for {s.name} of shape {tuple(s.tensor.shape)}",
                        ctx.importance,
                    )
                flat_alive = s.tensor.detach().reshape(-1) != 0
                sc = raw.detach().float().reshape(-1).nan_to_num(nan=_BIG, posinf=_BIG).to(flat_alive.device)
                scores[s.name] = sc.masked_fill(~flat_alive, torch.inf)  # zeros are never chosen again
                alive[s.name] = flat_alive
                removed[s.name] = plan.start[s.name] - s.nonzero
            final, per_category, per_slot = plan.final, plan.per_category, plan.per_slot
            if step == config.steps > 1:
                # Parameters outside the pruned weights may have become nonzero between steps (a
                # zero-initialised bias fine-tuned in on_step): zero that many more weights.
                gained = (total - sum(plan.start[n] - r for n, r in removed.items())) - (plan.total - sum(plan.start.values()))
                if gained > 0:
                    try:
                        per_category, per_slot = plan.split(final + gained, config)
                        final += gained
                    except UnreachableTargetError:
                        notes.append(f"{gained} parameters became nonzero during fine-tuning; no room to offset them")
            chosen = _choose(scores, removed, plan, config, step / config.steps, final, per_category, per_slot)
            by_name = {s.name: s for s in slots}
            for name, picked in chosen.items():
                s = by_name[name]
                keep = (alive[name] & ~picked).view_as(s.tensor)
                _apply(s, keep, use_masks)
        return notes


def _choose(
    scores: dict[str, torch.Tensor],
    removed: dict[str, int],
    plan: _Plan,
    config: PruneConfig,
    fraction: float,
    final: int,
    per_category: dict[str, int],
    per_slot: dict[str, int],
) -> dict[str, torch.Tensor]:
    """Boolean "prune this element" masks (flat) per slot name, to reach ``fraction`` of the plan."""
    caps = {n: max(0, plan.limit[n] - removed[n]) for n in scores}
    if config.scope == "global":
        want = round(final * fraction) - sum(removed.values())
        return _lowest_capped(scores, want, caps)
    chosen: dict[str, torch.Tensor] = {}
    if config.scope == "category":
        for cat, count in per_category.items():
            members = [n for n in scores if plan.category[n] == cat]
            want = round(count * fraction) - sum(removed[n] for n in members)
            chosen.update(_lowest_capped({n: scores[n] for n in members}, want, caps))
        return chosen
    for n, count in per_slot.items():
        if n in scores:
            chosen.update(_lowest({n: scores[n]}, min(round(count * fraction) - removed[n], caps[n])))
    return chosen


def _apply(slot: Slot, keep: torch.Tensor, use_masks: bool) -> None:
    param = getattr(slot.module, slot.attr)
    is_plain = isinstance(param, nn.Parameter) and param is slot.module._parameters.get(slot.attr)
    if slot.only_masks:
        # Zero the stored weight too (masked or not), so scores and ``original`` agree with what
        # the forward sees.
        slot.leaf.mul_(keep)
    if use_masks or not is_plain:
        set_mask(slot.module, slot.attr, keep)


_BIG = torch.finfo(torch.float32).max


def _lowest(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Flat boolean masks marking the ``k`` lowest scores over all the given tensors together.

    Ties are broken by position (earlier tensors and elements first), so the same scores always give
    the same selection.
    """
    if k <= 0 or not scores:
        return {}
    names = list(scores)
    flat = scores[names[0]] if len(names) == 1 else torch.cat([scores[n] for n in names])
    k = min(k, flat.numel())
    # a k-th value selection is about twice as fast as topk on millions of scores
    threshold = torch.kthvalue(flat, k).values
    picked = flat < threshold
    missing = k - int(picked.sum())
    if missing > 0:  # ties at the threshold: the first ones in order
        picked[torch.nonzero(flat == threshold).flatten()[:missing]] = True
    return dict(zip(names, torch.split(picked, [scores[n].numel() for n in names])))


def _lowest_capped(scores: dict[str, torch.Tensor], k: int, caps: dict[str, int]) -> dict[str, torch.Tensor]:
    """Like :func:`_lowest`, but no tensor loses more than ``caps[name]``; the excess goes to the rest.

    Water-filling: a tensor over its cap after a joint pick keeps its ``cap`` lowest and leaves the
    pool; the rest is picked again from the others.
    """
    chosen: dict[str, torch.Tensor] = {}
    pool = {n: t for n, t in scores.items() if caps[n] > 0}
    while k > 0 and pool:
        picked = _lowest(pool, k)
        over = [n for n, m in picked.items() if int(m.sum()) > caps[n]]
        if not over:
            chosen.update(picked)
            break
        for n in over:
            chosen.update(_lowest({n: pool.pop(n)}, caps[n]))
            k -= caps[n]
    return chosen
