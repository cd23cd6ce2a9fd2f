"""Depth pruning: remove whole residual blocks (and optional branches) instead of channels.

Candidates come from the plugins (hook ``modprune_removable_blocks``; see
:mod:`modprune.pruners.depth_blocks`): ultralytics' ``Bottleneck`` with a shortcut (inside C2f, C3k2, C3,
C3k) from the ultralytics integration, a plugin's own residual blocks and optional branches from that
plugin. Each removal keeps every tensor shape, so the model keeps its outputs' shapes and its other
layers as they are.

How blocks are chosen:

1. every allowed candidate is removed alone, on the calibration batch (``example_inputs``), and put back:
   its *harm* is the relative L2 change of the model's outputs, ``||y' - y|| / ||y||``; its *saving* the
   MACs (``target_kind: macs``) or parameters (``params``) that go with it, or one unit (``blocks``);
2. candidates are taken greedily by harm per unit saved (least harmful per MAC first) until the target is
   met: ``macs`` / ``params``: that fraction of the model's MACs / parameters is gone; ``blocks``: that
   fraction of the allowed candidates is gone (a unit inside a removed block is gone with it). The last
   block is the least harmful of those that complete the target alone. Blocks are coarse: the result meets
   the target and overshoots it by less than one block;
3. with ``steps > 1``, step ``k`` reaches ``k / steps`` of the target, ranking the remaining candidates again
   on the model as it is then (after the ``on_step`` fine-tuning), and calls ``on_step``.

The importance metric is not used (the ranking measures the removal itself). ``protect``, ratio-0 categories,
``protect_modules`` and the plugins' ``modprune_protected_modules`` keep every block holding (or lying inside)
what they name; the other ratios, ``scope`` and ``max_ratio`` have no meaning for whole blocks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from modprune.config import MAX_INT, PruneConfig
from modprune.exceptions import ConfigError, ModpruneError, UnreachableTargetError
from modprune.importance.base import CHANNELS
from modprune.measure import count_macs, count_params
from modprune.pruners.base import PruneContext, PruneOutcome, PrunePlan, Pruner
from modprune.pruners.depth_blocks import (
    BlockEffect,
    RemovableBlock,
    allowed_blocks,
    eval_mode,
    measure_effects,
    remove_block,
    removable_blocks,
)
from modprune.pruners.structured_setup import protected_subtrees

__all__ = ["DepthOptions", "DepthPlan", "DepthPruner", "choose_blocks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthOptions:
    """``pruner_options`` of :class:`DepthPruner`.

    :param kinds: only candidates of these kinds (``residual``, ``optional`` or a plugin's); null: every kind.
    :param max_blocks: remove at most this many units in all (null: no cap).
    """

    kinds: tuple[str, ...] | None = None
    max_blocks: int | None = None

    def __post_init__(self) -> None:
        kinds = self.kinds
        if kinds is not None:
            if isinstance(kinds, str):
                kinds = (kinds,)
            if not isinstance(kinds, (list, tuple)) or not kinds or not all(isinstance(k, str) and k for k in kinds):
                raise ConfigError(f"pruner_options kinds must be a non-empty list of block kinds (e.g. [residual]) or "
                                  f"null, got {self.kinds!r}", self.kinds)
            object.__setattr__(self, "kinds", tuple(kinds))
        value = self.max_blocks
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT):
            raise ConfigError(f"pruner_options max_blocks must be a positive integer or null, got {value!r}", value)


def _amount(effect: BlockEffect, kind: str, units: dict[str, int]) -> float:
    if kind == "macs":
        return float(effect.macs)
    if kind == "params":
        return float(effect.params)
    return float(units.get(effect.block.name, 1))


def _inside(name: str, other: str) -> bool:
    return name == other or name.startswith(f"{other}.")


def choose_blocks(
    effects: list[BlockEffect], kind: str, need: float, max_blocks: int | None = None
) -> tuple[list[BlockEffect], float]:
    """Blocks to remove so that at least ``need`` (MACs, parameters or units, by ``kind``) go; returns them
    (outermost only) and the amount they remove.

    Greedy by harm per unit saved (ties: model order). When the next block would complete the target, the
    last block is instead the least harmful of all those that complete it alone (so a big block does not
    overshoot where a smaller one suffices). A block inside one already chosen is skipped; a block around
    chosen ones replaces them and adds only what they did not remove. ``max_blocks`` caps the units removed.
    Infinitely harmful blocks (their removal changes an output's shape or breaks the forward) and blocks
    saving nothing are never chosen.
    """
    names = [e.block.name for e in effects]
    units = {n: sum(1 for m in names if _inside(m, n)) for n in names}
    usable = [e for e in effects if math.isfinite(e.change) and _amount(e, kind, units) > 0]
    ranked = sorted(usable, key=lambda e: e.change / _amount(e, kind, units))
    state = _Choice(kind, units, max_blocks)
    while state.done < need:
        options = [e for e in ranked if state.gain(e) is not None]
        if not options:
            break
        best = options[0]
        if state.done + (state.gain(best) or 0.0) >= need:  # the last one: the least harmful that completes
            best = min((e for e in options if state.done + (state.gain(e) or 0.0) >= need), key=lambda e: e.change)
        state.take(best)
    return state.chosen, state.done


class _Choice:
    """Blocks chosen so far (outermost only), the amount and the units they remove."""

    def __init__(self, kind: str, units: dict[str, int], max_blocks: int | None) -> None:
        self.kind, self.units, self.max_blocks = kind, units, max_blocks
        self.chosen: list[BlockEffect] = []
        self.done, self.count = 0.0, 0

    def _inner(self, effect: BlockEffect) -> list[BlockEffect]:
        return [c for c in self.chosen if _inside(c.block.name, effect.block.name)]

    def gain(self, effect: BlockEffect) -> float | None:
        """What choosing ``effect`` adds; None when it is chosen, inside a chosen block, or over the cap."""
        name = effect.block.name
        if any(_inside(name, c.block.name) for c in self.chosen):
            return None
        inner = self._inner(effect)
        extra = self.units[name] - sum(self.units[c.block.name] for c in inner)
        if self.max_blocks is not None and self.count + extra > self.max_blocks:
            return None
        return _amount(effect, self.kind, self.units) - sum(_amount(c, self.kind, self.units) for c in inner)

    def take(self, effect: BlockEffect) -> None:
        inner = self._inner(effect)
        self.done += self.gain(effect) or 0.0
        self.count += self.units[effect.block.name] - sum(self.units[c.block.name] for c in inner)
        self.chosen = [c for c in self.chosen if c not in inner] + [effect]


@dataclass(frozen=True)
class DepthPlan(PrunePlan):
    """The candidates measured on the unpruned model and the blocks the first step removes.

    :param start: the target's metric at the start (MACs, parameters, or the number of allowed units).
    :param macs: MACs of the unpruned model on the calibration batch.
    """

    effects: tuple[BlockEffect, ...] = ()
    chosen: tuple[BlockEffect, ...] = ()
    start: float = 0.0
    macs: int = 0
    notes: tuple[str, ...] = ()


class DepthPruner(Pruner):
    """Removes whole residual blocks (those plugins offer) until the MACs / parameters / blocks target is met."""

    name = "depth"
    requires = CHANNELS
    description = "remove whole residual blocks (least output change per MAC first); fewer layers, same widths"
    target_kinds = ("macs", "params", "blocks")
    options_type = DepthOptions

    def counts_macs(self, config: PruneConfig) -> bool:
        """MACs are counted before (the ranking's forward) and after removal: always reused."""
        return True

    def plan(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> DepthPlan:
        """Measure every allowed candidate (each removed alone, then put back) and choose the first step's blocks.

        :raises ConfigError: no ``example_inputs``, or a ``protect_modules`` pattern matching nothing.
        :raises UnreachableTargetError: removing every allowed block cannot reach the target.
        """
        options = self.parse_options(config.pruner_options)
        if ctx.example_inputs is None:
            raise ConfigError("depth pruning needs example_inputs (a calibration batch the model accepts) to "
                              "measure what removing each block changes", None)
        protected_subtrees(model, config)  # a protect_modules pattern matching nothing raises
        blocks, notes = self.candidates(model, config, ctx, ctx.categories, options)
        effects, macs = measure_effects(model, blocks, ctx.example_inputs)
        kind = config.target_kind or self.target_kinds[0]
        start = float(macs if kind == "macs" else count_params(model) if kind == "params" else len(blocks))
        most = choose_blocks(effects, kind, math.inf, options.max_blocks)[1]
        if config.target > 0 and (not blocks or most < config.target * start * (1 - 1e-9)):
            raise UnreachableTargetError(
                f"{kind} target {config.target} is unreachable by depth pruning: removing every allowed block "
                f"({len(blocks)}) removes {most / start if start else 0:.4f}; "
                f"{'; '.join(notes) or 'nothing protected'}. Lower the target, protect less, or combine depth "
                "with channel pruning (method depth+structured)",
                config.target,
            )
        chosen = choose_blocks(effects, kind, config.target * start / config.steps, options.max_blocks)[0]
        return DepthPlan(config, options, tuple(effects), tuple(chosen), start, macs, tuple(notes))

    @staticmethod
    def candidates(model: nn.Module, config: PruneConfig, ctx: PruneContext, categories: Any,
                   options: DepthOptions) -> tuple[list[RemovableBlock], list[str]]:
        """The blocks plugins offer for ``model`` that ``config`` allows, and notes on the others."""
        offered = removable_blocks(model, ctx.removable_blocks(model))
        if not offered:
            raise UnreachableTargetError(
                f"nothing to remove in {type(model).__name__}: no plugin offers removable blocks for it (hook "
                "modprune_removable_blocks; built in: ultralytics' Bottleneck with a shortcut)", config.target)
        return allowed_blocks(model, offered, config, categories, ctx.protected_modules(model), options.kinds)

    def apply(self, model: nn.Module, plan: PrunePlan, ctx: PruneContext) -> PruneOutcome:
        if not isinstance(plan, DepthPlan):
            raise ModpruneError(f"depth pruner got a plan it did not make: {type(plan).__name__}", plan)
        config, kind = plan.config, plan.config.target_kind or "macs"
        notes = list(plan.notes)
        gone: set[str] = set()  # allowed candidates (measured at the start) removed so far
        chosen = list(plan.chosen)
        for step in range(1, config.steps + 1):
            if step > 1:
                chosen = self._rechoose(model, plan, ctx, step, len(gone))
            for effect in chosen:
                remove_block(model, effect.block)
                notes.append(f"step {step}/{config.steps}: removed {effect.block.name} "
                             f"({type(effect.block.module).__name__}, {effect.block.kind}): output change "
                             f"{effect.change:.4g}, {effect.macs} MACs, {effect.params} parameters")
            gone |= _units_gone(plan, chosen)
            if ctx.on_step is not None:
                ctx.on_step(step, config.steps, model)
        with eval_mode(model):
            after = count_macs(model, ctx.example_inputs)
        achieved = len(gone) / plan.start if kind == "blocks" and plan.start else None
        gone = {"macs": 1 - after / plan.macs if plan.macs else 0.0, "blocks": achieved}.get(kind)
        if gone is not None:
            notes.append(f"achieved {kind} reduction {gone:.4f} (target {config.target:.4f})")
        return PruneOutcome(tuple(notes), achieved, ctx.classify(model), macs=(plan.macs, after))

    def _rechoose(self, model: nn.Module, plan: DepthPlan, ctx: PruneContext, step: int,
                  removed_units: int) -> list[BlockEffect]:
        """The blocks step ``step`` removes, ranked again on the model as it is now."""
        config, kind = plan.config, plan.config.target_kind or "macs"
        categories = ctx.classify(model)
        blocks, _ = self.candidates(model, config, ctx, categories, plan.options)
        effects, macs = measure_effects(model, blocks, ctx.example_inputs)
        now = {"macs": macs, "params": count_params(model)}.get(kind, plan.start - removed_units)
        need = config.target * plan.start * step / config.steps - (plan.start - now)
        cap = None if plan.options.max_blocks is None else plan.options.max_blocks - removed_units
        return choose_blocks(effects, kind, need, cap)[0] if need > 0 and (cap is None or cap > 0) else []


def _units_gone(plan: DepthPlan, chosen: list[BlockEffect]) -> set[str]:
    """Names of the allowed candidates (as measured at the start) gone with ``chosen``."""
    names = [e.block.name for e in plan.effects]
    return {n for n in names if any(_inside(n, c.block.name) for c in chosen)}


def depth_config(config: PruneConfig, target: float, options: DepthOptions) -> PruneConfig:
    """``config`` for the depth stage of a composite pruner: ``target``, ``options``, one step."""
    return dataclasses.replace(config, method=DepthPruner.name, target=target, steps=1,
                               pruner_options={k: v for k, v in dataclasses.asdict(options).items() if v is not None})

