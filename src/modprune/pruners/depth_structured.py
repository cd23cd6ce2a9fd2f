"""``depth+structured``: depth pruning, then channel pruning, in one prune (one recipe, one report).

The composite splits one MACs (or parameters) target between the two pruners: the depth stage removes whole
blocks until ``depth_share * target`` of the metric is gone (:class:`~modprune.pruners.depth.DepthPruner`,
least output change per MAC first), then the structured stage removes channels from what is left until the
whole ``target`` is gone, measured against the model as it was before the depth stage
(:class:`~modprune.pruners.structured.StructuredPruner`; its ``target`` is ``1 - (1 - target) / (1 - depth
achieved)``). ``depth_share: 0`` is plain structured pruning, ``1`` plain depth pruning (when the blocks can
reach the target alone).

A latency target (``target_kind: latency``) is split the same way, except that the depth stage is sized in
MACs (``depth_share * target`` of them, or every allowed block when they hold fewer: blocks are ranked by
output change per MAC); the latency the stage saved is then measured (the fused models timed together, or
predicted with a deterministic table) and the structured stage removes the rest of the latency with its
latency target, on the same table.

``steps`` and ``on_step`` apply to the structured stage; the depth stage is one step. The config's other fields (importance, protections, ratios, ``round_to``) are shared by both stages
as each understands them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from modprune.config import PruneConfig
from modprune.exceptions import ConfigError, ModpruneError, UnreachableTargetError
from modprune.importance.base import CHANNELS
from modprune.measure import count_macs, count_params
from modprune.measure.latency_table import MeasuredLatencyTable
from modprune.pruners.base import PruneContext, PruneOutcome, PrunePlan, Pruner
from modprune.pruners.depth import DepthOptions, DepthPruner, depth_config
from modprune.pruners.depth_blocks import eval_mode
from modprune.pruners.structured import StructuredOptions, StructuredPruner
from modprune.pruners.structured_latency import LatencyGoal

__all__ = ["DepthStructuredOptions", "DepthStructuredPlan", "DepthStructuredPruner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthStructuredOptions:
    """``pruner_options`` of :class:`DepthStructuredPruner`.

    :param depth_share: the part of the target the depth stage takes, in [0, 1].
    :param kinds: the depth stage's candidate kinds (null: every kind).
    :param max_blocks: the most units the depth stage removes (null: no cap).
    :param round_to: the structured stage's channel multiple (null: any count).
    :param align: latency target: the structured stage's width multiple (see :class:`StructuredOptions`).
    :param latency_backend: latency target: the backend the table is measured on.
    :param latency_threads: latency target: threads latency is measured and predicted for.
    """

    depth_share: float = 0.5
    kinds: tuple[str, ...] | None = None
    max_blocks: int | None = None
    round_to: int | None = None
    align: int | str = "auto"
    latency_backend: str = "torch-cpu"
    latency_threads: int = 1

    def __post_init__(self) -> None:
        share = self.depth_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ConfigError(f"pruner_options depth_share must be a number in [0, 1], got {share!r}", share)
        object.__setattr__(self, "kinds", self.depth.kinds)
        self.structured  # noqa: B018 - validates round_to

    @property
    def depth(self) -> DepthOptions:
        return DepthOptions(self.kinds, self.max_blocks)

    @property
    def structured(self) -> StructuredOptions:
        return StructuredOptions(self.round_to, self.align, self.latency_backend, self.latency_threads)

    def structured_options(self) -> dict[str, Any]:
        """The structured stage's ``pruner_options`` (what differs from its defaults)."""
        default = StructuredOptions()
        return {f: getattr(self.structured, f) for f in ("round_to", "align", "latency_backend", "latency_threads")
                if getattr(self.structured, f) != getattr(default, f)}


@dataclass(frozen=True)
class DepthStructuredPlan(PrunePlan):
    """The depth stage's plan (None when ``depth_share`` is 0) and the structured stage's checks."""

    depth: PrunePlan | None = None


class DepthStructuredPruner(Pruner):
    """Removes whole blocks first, then channels, until one MACs / parameters target is met."""

    name = "depth+structured"
    requires = CHANNELS
    description = "remove whole residual blocks, then channels (one target split between them)"
    target_kinds = ("macs", "params", "latency")
    options_type = DepthStructuredOptions

    def __init__(self) -> None:
        self.depth_pruner, self.structured_pruner = DepthPruner(), StructuredPruner()

    def plan(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> DepthStructuredPlan:
        """The depth stage's plan (the blocks measured and chosen) and the structured stage's cheap checks.

        :raises UnreachableTargetError: the depth share cannot be reached by removing blocks.
        """
        options = self.parse_options(config.pruner_options)
        self.structured_pruner.plan(model, self._structured_config(config, options, config.target), ctx)
        depth = None
        if options.depth_share > 0:
            depth = self._depth_plan(model, config, options, ctx)
        return DepthStructuredPlan(config, options, depth)

    def _depth_plan(self, model: nn.Module, config: PruneConfig, options: DepthStructuredOptions,
                    ctx: PruneContext) -> PrunePlan:
        """The depth stage's plan. For a latency target it is sized in MACs and, when the allowed blocks hold
        fewer MACs than its share, takes every allowed block (the latency saved is measured afterwards)."""
        sub = depth_config(config, config.target * options.depth_share, options.depth)
        if config.target_kind != "latency":
            return self.depth_pruner.plan(model, sub, ctx)
        try:
            return self.depth_pruner.plan(model, dataclasses.replace(sub, target_kind="macs"), ctx)
        except UnreachableTargetError:
            if options.max_blocks is not None:
                raise
            log.info("depth stage: the allowed blocks hold less than its share of the MACs; removing all of them")
            return self.depth_pruner.plan(model, dataclasses.replace(sub, target_kind="blocks", target=0.999999), ctx)

    def apply(self, model: nn.Module, plan: PrunePlan, ctx: PruneContext) -> PruneOutcome:
        if not isinstance(plan, DepthStructuredPlan):
            raise ModpruneError(f"depth+structured pruner got a plan it did not make: {type(plan).__name__}", plan)
        config, notes = plan.config, []
        kind = config.target_kind or "macs"
        if kind == "latency":
            return self._apply_latency(model, plan, ctx)
        start = self._metric(model, kind, ctx)
        ctx = self._depth_stage(model, plan, ctx, notes)
        done = 1 - self._metric(model, kind, ctx) / start if start else 0.0
        rest = 1 - (1 - config.target) / (1 - done) if done < 1 else 0.0
        if rest <= 0:
            notes.append(f"structured: skipped, the depth stage removed {done:.4f} of {kind} already")
            return PruneOutcome(tuple(notes), None, ctx.categories)
        sub = self._structured_config(config, plan.options, rest)
        stage = self.structured_pruner
        outcome = stage.apply(model, stage.plan(model, stage.resolve(sub), ctx), ctx)
        notes.append(f"structured: target {rest:.4f} of the depth-pruned model's {kind}")
        notes += [f"structured: {n}" for n in outcome.notes]
        return PruneOutcome(tuple(notes), None, outcome.categories or ctx.categories)

    def _depth_stage(self, model: nn.Module, plan: DepthStructuredPlan, ctx: PruneContext,
                     notes: list[str]) -> PruneContext:
        """Run the depth stage (if planned), adding its notes; returns the context with the depth-pruned
        model's categories."""
        if plan.depth is None:
            return ctx
        outcome = self.depth_pruner.apply(model, plan.depth, dataclasses.replace(ctx, on_step=None))
        notes += [f"depth: {n}" for n in outcome.notes]
        return dataclasses.replace(ctx, categories=outcome.categories or ctx.classify(model))

    def _apply_latency(self, model: nn.Module, plan: DepthStructuredPlan, ctx: PruneContext) -> PruneOutcome:
        """Depth stage (sized in MACs), its latency saving measured, then the structured stage's latency target
        for the rest, on the same latency table."""
        config, options, notes = plan.config, plan.options, []
        table = ctx.latency_table
        if table is None:
            table = MeasuredLatencyTable(options.latency_backend, options.latency_threads)
        goal = LatencyGoal(model, ctx.example_inputs, table, options.structured.alignment())
        ctx = self._depth_stage(model, plan, ctx, notes)
        with eval_mode(model):
            done = 1 - goal.measure(model) / goal.start_ms
        notes.append(f"depth: latency {goal.start_ms:.2f} -> {goal.start_ms * (1 - done):.2f} ms "
                     f"({'measured' if goal.timed_models else 'predicted'}; removed {done:.4f})")
        rest = 1 - (1 - config.target) / (1 - done) if done < 1 else 0.0
        if rest <= 0:
            notes.append(f"structured: skipped, the depth stage removed {done:.4f} of latency already")
            return PruneOutcome(tuple(notes), done, ctx.categories, latency=goal.report())
        sub = self._structured_config(config, options, rest)
        stage, sub_ctx = self.structured_pruner, dataclasses.replace(ctx, latency_table=table)
        outcome = stage.apply(model, stage.plan(model, stage.resolve(sub), sub_ctx), sub_ctx)
        notes.append(f"structured: target {rest:.4f} of the depth-pruned model's latency")
        notes += [f"structured: {n}" for n in outcome.notes]
        achieved = 1 - (1 - done) * (1 - (outcome.achieved or 0.0))
        latency = {**dict(outcome.latency or {}), "start_ms": goal.start_ms, "depth_removed": done}
        return PruneOutcome(tuple(notes), achieved, outcome.categories or ctx.categories, latency=latency)

    @staticmethod
    def _metric(model: nn.Module, kind: str, ctx: PruneContext) -> float:
        if kind != "macs":
            return float(count_params(model))
        with eval_mode(model):
            return float(count_macs(model, ctx.example_inputs))

    @staticmethod
    def _structured_config(config: PruneConfig, options: DepthStructuredOptions, target: float) -> PruneConfig:
        return dataclasses.replace(config, method=StructuredPruner.name, target=min(max(target, 0.0), 0.999999),
                                   pruner_options=options.structured_options())
