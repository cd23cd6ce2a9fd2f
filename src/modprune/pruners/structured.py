"""Structured pruning: remove whole channels through torch-pruning's dependency graph.

How a config becomes torch-pruning's vocabulary:

* every convolution / linear layer (and every type a plugin registers a layer pruner for) is a root;
  its base ratio is ``config.ratio_for(its category)``; ``scope`` says which roots rank their
  channels together (``layer``: alone; ``category``: per category; ``global``: all categories
  sharing a ratio);
* protected categories and ``modprune_protected_modules`` are frozen: any group touching them
  (their outputs or their inputs) is skipped, so they stay bit-identical; layers feeding any tensor
  the model returns keep their output widths (a classifier keeps its classes, a returned feature map
  its channels); groups that would fold channels into positions through a reshape (``Linear -> view
  -> ConvTranspose``) are left alone, with a note;
* after each step, stored sizes (``in_channels``, ``out_features``, ``num_features``, ...) are set
  from the weights (see :func:`modprune.pruners.structured_setup.sync_stored_sizes`);
* one scale multiplies every base ratio (capped at ``max_ratio``). ``target_kind="channels"`` uses
  ``target`` as the scale; ``macs`` and ``params`` search the scale on estimates (no pruning per
  trial; see :mod:`modprune.pruners.structured_search`), prune once, then measure and correct;
* ``target_kind="latency"`` ranks groups by latency saved per importance lost on a per-layer latency
  table, keeping widths on the CPU's vector multiple, then measures and corrects (see
  :mod:`modprune.pruners.structured_latency`).

Iterative schedules (``steps > 1``) reach ``target * k / steps`` after step ``k``, recomputing
gradients before each step when the importance needs them, and calling ``ctx.on_step``.

For plugin authors, what makes a custom block structurally prunable (all through hooks):

* ``modprune_prepare_model``: rewrite blocks whose forward splits a conv output by stored sizes
  (``chunk``, ``split``) into separate convolutions, with identical outputs;
* ``modprune_register_layer_pruners``: ``(block_type, torch_pruning BasePruningFunc)`` for a block
  torch-pruning cannot trace or slice (it is then pruned as one layer, its inputs and outputs);
* ``modprune_unwrapped_parameters``: ``(parameter, channel_dim)`` for bare parameters with several
  non-singleton dimensions (one with a single such dimension is pruned along it and reported);
* ``modprune_protected_modules``: modules that must stay bit-identical (their inputs too);
* ``modprune_finalize_model``: refresh stored widths / split sizes after pruning;
* ``modprune_equal_width_layers``: layers whose output widths must end equal with
  ``pruner_options: {portable: true}`` (see :mod:`modprune.pruners.structured_equal`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modprune.config import MAX_ROUND_TO, PruneConfig
from modprune.detectors.classify import Categories
from modprune.exceptions import ConfigError, PluginError, UnreachableTargetError, UnsupportedModelError
from modprune.importance.base import CHANNELS
from modprune.measure import count_params
from modprune.measure.latency_model import vector_multiple
from modprune.measure.latency_table import BACKENDS, LatencyTable, MeasuredLatencyTable
from modprune.measure.walk import call_model, tensors_of
from modprune.pruners.base import PruneContext, PruneOutcome, PrunePlan, Pruner
from modprune.pruners.heads import ATTENTION_MODES, prune_attention
from modprune.pruners.structured_equal import equalize_widths
from modprune.pruners.structured_graph import GraphPruner, Plan, tracing_mode
from modprune.pruners.structured_latency import LatencyGoal
from modprune.pruners.structured_search import Estimator, MacsTable, macs_table, search_scale
from modprune.pruners.structured_setup import (
    bare_parameter_notes,
    describe,
    detached,
    find_protection,
    find_roots,
    module_stack,
    output_layers,
    sync_stored_sizes,
    type_changes,
    unsupported_from,
)
from modprune.pruners.structured_heads import attention_layouts, over_budget
from modprune.pruners.tp_patches import patched_torch_pruning
from modprune.pruners.trace_budget import BudgetExceeded, time_budget
from modprune.rollback import Snapshot, snapshot

__all__ = ["StructuredOptions", "StructuredPruner", "custom_types"]

log = logging.getLogger(__name__)

#: The real result must land this close to the target (fraction of the metric): 1 percentage point.
TOLERANCE = 0.01
#: The search stops when an estimate is this close to a step's goal.
SEARCH_TOLERANCE = 0.001
#: Extra corrective steps when the measured result falls short of the target.
MAX_CORRECTIONS = 3
#: A latency target is met within this many points (measured latency is noisier than counts).
LATENCY_TOLERANCE = 0.02
#: Seconds the dependency graph may take to build (``pruner_options.trace_budget``).
DEFAULT_TRACE_BUDGET = 300.0


@dataclass(frozen=True)
class StructuredOptions:
    """``pruner_options`` of :class:`StructuredPruner`.

    :param round_to: keep channel counts multiples of this (None: any count).
    :param align: latency target only: keep pruned widths (per channel group) on this multiple;
        ``auto``: the CPU's vector multiple (8 for AVX2, 16 for AVX-512) or ``round_to`` when set;
        ``none``: any width. Other targets use ``round_to``.
    :param latency_backend: latency target only, when no table is given: the backend the per-layer
        table is measured on (``torch-cpu`` or ``onnxruntime-cpu``).
    :param latency_threads: latency target only: threads the latency is measured and predicted for.
    :param attention: how attention modules that plugins describe (``modprune_attention_heads``: ultralytics
        Attention / AAttn, timm Attention) are pruned: ``auto`` (default: whole heads where the ratio removes
        at least one, else head dimensions), ``heads``, ``head_dims``, or ``protect`` (left as they are).
        Their input / output widths follow the plugins' protection either way.
    :param head_ratio: fraction of heads (or of each head's dimensions) removed; None: the target times the
        attention module's category ratio, capped at ``max_ratio``.
    :param trace_budget: seconds building the dependency graph may take before it stops with a
        :class:`~modprune.exceptions.TraceTimeoutError` naming the block (None: no limit).
    :param portable: after pruning, narrow the layers plugins name through
        ``modprune_equal_width_layers`` to equal widths (e.g. both halves of a split C2f block, so the
        checkpoint is written with ultralytics' own classes and loads where modprune is not installed).
        Removes a few channels more than the target asks for.
    """

    round_to: int | None = None
    align: int | str = "auto"
    latency_backend: str = "torch-cpu"
    latency_threads: int = 1
    attention: str = "auto"
    head_ratio: float | None = None
    trace_budget: float | None = DEFAULT_TRACE_BUDGET
    portable: bool = False

    def __post_init__(self) -> None:
        value = self.round_to
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= MAX_ROUND_TO):
            raise ConfigError(f"pruner_options round_to must be an integer in [1, {MAX_ROUND_TO}] or null, "
                              f"got {value!r}", value)
        align = self.align
        if align not in ("auto", "none") and (isinstance(align, bool) or not isinstance(align, int)
                                              or not 1 <= align <= MAX_ROUND_TO):
            raise ConfigError(f"pruner_options align must be auto, none or an integer in [1, {MAX_ROUND_TO}], "
                              f"got {align!r}", align)
        if self.latency_backend not in BACKENDS:
            raise ConfigError(f"pruner_options latency_backend must be one of {', '.join(BACKENDS)}, got "
                              f"{self.latency_backend!r}", self.latency_backend)
        threads = self.latency_threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"pruner_options latency_threads must be an integer >= 1, got {threads!r}", threads)
        if self.attention not in ATTENTION_MODES:
            raise ConfigError(f"pruner_options attention must be one of {', '.join(ATTENTION_MODES)}, "
                              f"got {self.attention!r}", self.attention)
        ratio = self.head_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1):
            raise ConfigError(f"pruner_options head_ratio must be a number in [0, 1) or null, got {ratio!r}", ratio)
        budget = self.trace_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
            raise ConfigError(f"pruner_options trace_budget must be a positive number of seconds or null (no "
                              f"limit), got {budget!r}", budget)
        if not isinstance(self.portable, bool):
            raise ConfigError(f"pruner_options portable must be true or false, got {self.portable!r}", self.portable)

    def alignment(self) -> int:
        """The width multiple of a latency target (1: any width)."""
        if self.align == "none":
            return 1
        if self.align == "auto":
            return self.round_to or vector_multiple()
        return int(self.align)


class StructuredPruner(Pruner):
    """Removes whole channels (and the matching inputs of the next layers) until the target is met."""

    name = "structured"
    requires = CHANNELS
    description = "remove whole channels (torch-pruning dependency graph); smaller, faster dense models"
    target_kinds = ("macs", "params", "channels", "latency")
    options_type = StructuredOptions

    def plan(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> PrunePlan:
        """Cheap checks before anything changes: inputs given, some layer left to prune.

        Whether a MACs / params target is reachable is known only after tracing; :meth:`apply`
        checks it before removing anything.
        """
        options = self.parse_options(config.pruner_options)
        if ctx.example_inputs is None:
            raise ConfigError(
                "structured pruning needs example_inputs (a batch the model accepts) to trace the model", None
            )
        roots = [
            name
            for name, module in model.named_modules()
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, *custom_types(ctx)))
            and config.ratio_for(ctx.categories.modules.get(name, "other")) > 0
        ]
        if not roots:
            raise UnreachableTargetError(
                f"nothing to prune in {type(model).__name__}: every convolution / linear layer is in a protected "
                f"category or has ratio 0 (protect: {list(config.protect) or 'none'}); protect fewer categories",
                config.target,
            )
        return PrunePlan(config, options)

    def apply(self, model: nn.Module, plan: PrunePlan, ctx: PruneContext) -> PruneOutcome:
        original = _structure(model)
        notes: list[str] = []
        ctx = self._prepare(model, plan.config, ctx, notes)
        prepared = _structure(model)
        with patched_torch_pruning():  # torch-pruning is as found again once this block exits
            unpruned = snapshot(model) if plan.config.target_kind == "latency" else None
            run = _Run(model, plan, ctx, notes)
            achieved = run.execute()
            if unpruned is not None and run.overshot():
                run = _replanned(model, plan, ctx, notes, run, unpruned)
                achieved = run.achieved
            run.finish()
            if plan.options.portable:
                run.equalize()
        ctx.finalize_model(model)
        run.check_outputs()
        model.zero_grad(set_to_none=True)
        macs = (int(run.start), int(run.last)) if run.kind == "macs" and run.start is not None else None
        latency = run.latency.report() if run.latency is not None else None
        return PruneOutcome(tuple(notes), achieved, _categories_after(model, original, prepared, ctx), macs=macs,
                            latency=latency)

    def counts_macs(self, config: PruneConfig) -> bool:
        """A MACs target measures MACs before and after (FlopCounterMode, then exact hooks): reused."""
        return (config.target_kind or "macs") == "macs"

    @staticmethod
    def _prepare(model: nn.Module, config: PruneConfig, ctx: PruneContext, notes: list[str]) -> PruneContext:
        """Plugin rewrites (``modprune_prepare_model``); the context with the rewritten model's categories."""
        before = Counter(type(m).__name__ for m in model.modules())
        structure = _structure(model)
        ctx.prepare_model(model, config)
        after = Counter(type(m).__name__ for m in model.modules())
        if before != after:
            notes.append(f"prepared by plugins (modprune_prepare_model): {type_changes(before, after)}")
        if _structure(model) == structure:
            return ctx
        return dataclasses.replace(ctx, categories=ctx.classify(model))


def _replanned(model: nn.Module, plan: PrunePlan, ctx: PruneContext, notes: list[str], first: _Run,
               unpruned: Snapshot) -> _Run:
    """A latency run that measured past its target, pruned again from ``unpruned`` aiming short by the
    measured overshoot: the cut saved ``achieved / target`` times what was planned, so the new plan aims at
    ``target**2 / achieved`` and may land past it by the tolerance shrunk in the same proportion. The result
    closer to the target is kept. A correction can only remove more, so this is the one way back.
    """
    target, achieved = plan.config.target, first.achieved
    aim = max(target * target / achieved, target / 2)
    notes.append(f"re-planned: the measured latency reduction {achieved:.4f} overshot the target {target:.4f} "
                 f"by more than {first.tolerance:.0%}; pruning the unpruned model again, aiming at {aim:.4f}")
    log.info(notes[-1])
    first_result = snapshot(model)
    unpruned.restore(model)
    second = _Run(model, plan, ctx, notes)
    second.plan_tolerance = first.tolerance * aim / target
    second.execute(aim=aim)
    if abs(second.achieved - target) < abs(achieved - target):
        return second
    first_result.restore(model)
    notes.append(f"re-planned result ({second.achieved:.4f}) is no closer to the target: the first one "
                 f"({achieved:.4f}) is kept")
    return first


def _short_of(values: dict[float, float], goal: float, best: tuple[float, float]) -> tuple[float, float]:
    """With rounding units, the trial closest to ``goal`` (fraction kept) that keeps more than it: a
    shortfall is made up by the next correction (on the pruned model, with other units), an overshoot
    never is. ``best`` when no trial falls short."""
    short = [(s, v) for s, v in values.items() if v >= goal and s > 0]
    return min(short, key=lambda item: item[1]) if short else best


def _latency_start_note(goal: LatencyGoal) -> str:
    how = "measured (fused, interleaved rounds)" if goal.measured_ms is not None else "predicted by the table"
    busy = "; unreliable: machine busy" if goal.reliable is False else ""
    return (f"latency target: {goal.table.backend}, {goal.table.threads} thread(s), start {goal.start_ms:.3f} ms {how}, "
            f"residual {goal.residual.ms:.3f} ms, widths aligned to {goal.align}{busy}")


def _latency_end_note(goal: LatencyGoal) -> str:
    report = goal.report()
    if report["measured_ms"] is None:
        return f"latency predicted {report['predicted_ms']:.3f} ms (not measured: the table times no models)"
    busy = " (unreliable: machine busy)" if report["reliable"] is False else ""
    noisy = ""
    if report.get("noisy_layer_calls"):
        noisy = (f"; {report['noisy_layer_calls']} of {report['layer_calls']} layer timings behind the prediction "
                 "were taken on a busy machine (timed again when a table next uses them)")
    return (f"latency predicted {report['predicted_ms']:.3f} ms, measured {report['measured_ms']:.3f} ms "
            f"(prediction error {report['prediction_error']:+.1%}){busy}{noisy}")


def _latency_why(goal: LatencyGoal, achieved: float, target: float) -> str:
    if achieved > target:
        return "; the last step removed more than needed (channels go a vector multiple at a time)"
    return ("; no further step the latency table says is faster stays within max_ratio, protect and category "
            "ratios, or the measured model is slower than the table predicts (machine load, residual ops)")


def custom_types(ctx: PruneContext) -> tuple[type, ...]:
    """Module types with a registered layer pruner."""
    return tuple(t for t in ctx.layer_pruners if isinstance(t, type))


def _structure(model: nn.Module) -> list[tuple[str, type]]:
    """Every module's qualified name and type: equal structures get equal categories."""
    return [(name, type(module)) for name, module in model.named_modules()]


def _categories_after(
    model: nn.Module, original: list[tuple[str, type]], prepared: list[tuple[str, type]], ctx: PruneContext
) -> Categories | None:
    """Categories of the pruned model, classified again only when its modules are neither those it
    started with (None: the caller's still apply, e.g. after a rewrite that ``modprune_finalize_model``
    undid) nor the prepared ones (``ctx``'s)."""
    now = _structure(model)
    if now == original:
        return None
    return ctx.categories if now == prepared else ctx.classify(model)


class _Run:
    """One structured pruning run: the graph, the steps, the measurements and the notes."""

    def __init__(self, model: nn.Module, plan: PrunePlan, ctx: PruneContext, notes: list[str]) -> None:
        config = plan.config
        self.model, self.config, self.ctx, self.notes = model, config, ctx, notes
        self.kind = config.target_kind or "macs"
        self.round_to = plan.options.round_to if self.kind != "latency" else None  # latency: the greedy aligns
        self.options = plan.options
        self.tolerance = LATENCY_TOLERANCE if self.kind == "latency" else TOLERANCE
        self.plan_tolerance = self.tolerance  # what the latency greedy may land past a step's goal
        self.latency: LatencyGoal | None = None
        self.inputs = ctx.example_inputs
        protection = find_protection(model, config, ctx)
        notes.extend(protection.notes)
        self.frozen = protection.frozen
        self.subtrees = protection.subtrees
        self.roots = find_roots(model, config, ctx, self.frozen)
        if self.kind == "latency":  # the greedy ranks every group against every other: each root alone
            self.roots.scopes = [(m,) for m in self.roots.base]
        if not any(b > 0 for b in self.roots.base.values()):
            raise UnreachableTargetError(
                f"no prunable layer: every convolution/linear layer is protected or has ratio 0 "
                f"(protect: {list(config.protect) or 'none'}); protect fewer categories",
                config.target,
            )
        self.output_shapes: dict[int, tuple[int, ...]] = {}
        self.custom_types = custom_types(ctx)
        self.layers_only = False
        self._reshape_noted = False
        self.table: MacsTable | None = None
        self.start: float | None = None
        self.last = 0.0
        self.achieved = 0.0
        self.budget = plan.options.trace_budget
        before = self._prune_heads(plan.options)
        self.pruner = self._build()
        self.start = self._measure()
        if before is not None:  # the heads removed count towards the target
            self.start = before

    # --- attention ----------------------------------------------------------------------------

    def _prune_heads(self, options: StructuredOptions) -> float | None:
        """Prune the plugins' attention layouts by heads / head dims (see :mod:`modprune.pruners.heads`).

        :return: the target's metric before (MACs or parameters) when anything was removed, else None.
        """
        if options.attention == "protect" or self.kind == "channels":
            return None
        layouts = attention_layouts(self.model, self.config, self.ctx, options.head_ratio)
        if not layouts:
            return None
        before = self._measure()
        lines = prune_attention(layouts, options.attention)
        self.notes.append(f"attention ({options.attention}): {'; '.join(lines[:6])}"
                          + (f"; ... ({len(lines)} modules)" if len(lines) > 6 else ""))
        log.info(self.notes[-1])
        return before

    # --- graph --------------------------------------------------------------------------------

    def _build(self) -> GraphPruner:
        """Trace the model into a :class:`GraphPruner`, then check what the graph found."""
        declared = list(self.ctx.unwrapped_parameters(self.model))
        pruner, outputs, fed = self._trace(declared)
        frozen_ids = {id(p) for f in self.frozen for p in ([f] if isinstance(f, nn.Parameter) else f.parameters())}
        self.notes.extend(bare_parameter_notes(pruner, self.model, {id(p) for p, _ in declared}, frozen_ids))
        resizable = {id(t) for t in self.ctx.resizable_outputs(self.model, outputs)}
        layers, returned = output_layers(pruner, [outputs, *fed], skip=resizable)
        shapes = [tuple(t.shape) for t in tensors_of(outputs)]
        self.output_shapes = {i: shapes[i] for i in returned if i < len(shapes)}
        kept = [m for m in layers if m not in pruner.ignored_layers]
        pruner.ignored_layers.extend(kept)
        if kept:
            names = {id(m): n for n, m in self.model.named_modules()}
            listed = ", ".join(describe(names.get(id(m), "?"), m) for m in kept[:6])
            self.notes.append(f"output widths kept (layers feeding the tensors the model returns): {listed}")
        return pruner

    def _trace(self, declared: list[tuple[Any, int]]) -> tuple[GraphPruner, Any, list[Any]]:
        """The :class:`GraphPruner` and the traced outputs; raises naming the module that cannot be traced."""
        captured: dict[str, Any] = {}

        fed: list[Any] = []  # tensors entering protected subtrees, traced as if returned

        def forward_fn(model: nn.Module, inputs: Any) -> Any:
            fed.clear()
            with detached(self.subtrees, fed):
                captured["out"] = call_model(model, inputs)
            return [captured["out"], *fed] if fed else captured["out"]

        started = time.perf_counter()
        log.info("tracing the dependency graph (%d root layers)", len(self.roots.base))
        with module_stack(self.model) as stack, tracing_mode(self.model), time_budget(self.model, self.budget):
            try:
                pruner = GraphPruner(
                    self.model,
                    self.inputs,
                    self.ctx.importance.channel_importance(),
                    base_ratios=self.roots.base,
                    scopes=self.roots.scopes,
                    frozen=self.frozen,
                    max_ratio=self.config.max_ratio,
                    round_to=self.round_to,
                    customized_pruners=dict(self.ctx.layer_pruners),
                    unwrapped_parameters=declared,
                    root_module_types=self.roots.types,
                    forward_fn=forward_fn,
                )
            except (UnsupportedModelError, PluginError):
                raise
            except BudgetExceeded as exc:
                raise over_budget(exc, self.model, stack) from None
            except Exception as exc:  # torch-pruning and user models fail in many ways; name the module
                raise unsupported_from(exc, self.model, stack, "tracing") from exc
        log.info("dependency graph built in %.2f s", time.perf_counter() - started)
        return pruner, captured.get("out"), list(fed)

    # --- measuring ----------------------------------------------------------------------------

    def _measure(self) -> float:
        """The target's metric now: MACs, parameters, or root-layer output channels.

        MACs are counted like :func:`modprune.measure.count_macs` (FlopCounterMode), attributed to
        layers for the next step's estimates; when every MAC of the unpruned model was in convolution /
        linear layers, forward hooks give the same numbers much faster and are used from then on.
        """
        if self.kind == "macs":
            self.table = macs_table(self.model, self.inputs, self.custom_types, hooks=self.layers_only)
            if self.start is None:
                custom = any(isinstance(m, self.custom_types) for m in self.model.modules()) if self.custom_types else False
                self.layers_only = self.table.other == 0 and not custom
            self.last = float(self.table.total)
            return self.last
        if self.kind == "latency":
            if self.latency is None:
                self.latency = LatencyGoal(self.model, self.inputs, self._table(), self.options.alignment())
                self.notes.append(_latency_start_note(self.latency))
                return float(self.latency.start_ms)
            return float(self.latency.measure(self.model))
        if self.kind == "params":
            return float(count_params(self.model))
        return float(sum(self._channels(m)[0] for m in self.roots.base))

    def _table(self) -> LatencyTable:
        """The context's latency table, else one measured on this machine (cached on disk)."""
        table = self.ctx.latency_table
        if table is None:
            return MeasuredLatencyTable(self.options.latency_backend, self.options.latency_threads)
        if not isinstance(table, LatencyTable):
            raise ConfigError(f"latency_table must be a modprune.measure.LatencyTable, got {type(table).__name__}",
                              table)
        return table

    def _channels(self, module: Any) -> tuple[int, int]:
        """(outputs, inputs) of a layer by its pruning rule (built-in or registered); 0 if unknown."""
        try:
            return int(self.pruner.DG.get_out_channels(module) or 0), int(self.pruner.DG.get_in_channels(module) or 0)
        except (KeyError, AttributeError, TypeError):
            return 0, 0

    def _estimator(self) -> Estimator:
        if self.kind == "macs":
            return Estimator.for_macs(self.table, self._channels)
        dims = {
            id(node.module): node.pruning_dim
            for node in self.pruner.DG.module2node.values()
            if isinstance(node.module, nn.Parameter)
        }
        return Estimator.for_params(self.model, self._channels, dims)

    # --- steps --------------------------------------------------------------------------------

    def execute(self, aim: float | None = None) -> float | None:
        """Every step of the schedule, then corrections if the measured result falls short.

        ``aim`` (default: the target) is what the schedule plans for; corrections and the final check
        are against the target (a re-planned latency run aims short of it, see :func:`_replanned`).
        Returns the achieved channel reduction for ``channels`` targets, the measured latency reduction
        for ``latency`` targets (None otherwise: the report measures MACs and parameters itself)."""
        steps, target = self.config.steps, self.config.target
        aim = target if aim is None else aim
        current = self.start
        for step in range(1, steps + 1):
            current = self._step(step, steps, aim * step / steps, current, check_final=step == 1)
            if self.ctx.on_step is not None:
                self.ctx.on_step(step, steps, self.model)
        if self.kind == "channels":
            channels = 1 - current / self.start
            self.notes.append(f"achieved channel reduction {channels:.4f} (root layers' outputs)")
            return channels
        for attempt in range(MAX_CORRECTIONS):
            achieved = 1 - current / self.start
            if achieved >= target - self.tolerance / 2:
                break
            log.info("achieved %.4f of %s, target %.4f: correcting (%d)", achieved, self.kind, target, attempt + 1)
            before, current = current, self._step(steps, steps, target, current, check_final=False, label="correction")
            if current == before:  # skipped: no plan comes closer
                break
        self.achieved = 1 - current / self.start
        return self.achieved if self.latency is not None else None

    def overshot(self) -> bool:
        """Whether a measured latency run removed more than the tolerance past its target."""
        return (self.latency is not None and self.latency.timed_models
                and self.achieved > self.config.target + self.tolerance)

    def finish(self) -> None:
        """Note the result against the target (see :meth:`_check_final`)."""
        if self.kind != "channels":
            self._check_final(self.achieved, self.config.target)

    def _check_final(self, achieved: float, target: float) -> None:
        """Note the result; outside the tolerance: raise with ``round_to`` (its units are the cause and
        ``prune`` rolls the model back), warn otherwise."""
        self.notes.append(f"achieved {self.kind} reduction {achieved:.4f} (target {target:.4f})")
        if abs(achieved - target) > self.tolerance and self.round_to and self.latency is None:
            raise UnreachableTargetError(
                f"{self.kind} target {target} is not reachable within {self.tolerance:.0%} with round_to {self.round_to}: "
                f"the closest reduction found is {achieved:.4f}; use that target, or a smaller round_to",
                target,
            )
        if abs(achieved - target) > self.tolerance:
            log.warning("structured pruning reached %.4f of %s, target %.4f", achieved, self.kind, target)
            self.notes.append(
                f"WARNING: {self.kind} reduction {achieved:.4f} is more than {self.tolerance:.0%} away from the target"
                + (_latency_why(self.latency, achieved, target) if self.latency is not None else "")
            )
        if self.latency is not None:
            self.notes.append(_latency_end_note(self.latency))

    def _step(self, step: int, steps: int, goal: float, current: float, *, check_final: bool, label: str = "") -> float:
        """Prune one step so that ``goal`` of the starting metric is gone; returns the metric after."""
        log.info("%s: planning %.4f of %s removed", label or f"step {step}/{steps}", goal, self.kind)
        if self.ctx.importance.needs_gradients:
            self.ctx.compute_gradients(self.model)
        started = time.perf_counter()
        # torch-pruning's random importance draws from the global generator: seed it, locally.
        with tracing_mode(self.model), torch.random.fork_rng(devices=[]), module_stack(self.model) as stack:
            torch.manual_seed(self.config.seed + step)
            try:
                self.pruner.new_step()
                plan, trials, estimate = self._choose_plan(step, steps, goal, current, check_final)
                if label == "correction" and self._no_closer(estimate, current, goal):
                    return current
                groups = self.pruner.apply(plan)
            except (UnsupportedModelError, UnreachableTargetError, PluginError):
                raise
            except Exception as exc:  # torch-pruning fails in many ways on unknown layers: name the module
                raise unsupported_from(exc, self.model, stack, "pruning") from exc
        scale = plan.scale
        self._note_fixes(sync_stored_sizes(self.model))
        self.model.zero_grad(set_to_none=True)
        log.info("%s: pruned %d groups, measuring", label or f"step {step}/{steps}", groups)
        with module_stack(self.model) as stack:
            try:
                after = self._measure()
            except Exception as exc:  # the pruned forward breaks, e.g. on channel counts stored as ints
                raise unsupported_from(exc, self.model, stack, "running") from exc
        seconds = time.perf_counter() - started
        self.notes.append(self._step_note(label or f"step {step}/{steps}", scale, groups, trials, estimate, after, seconds))
        log.info(self.notes[-1])
        return after

    def _no_closer(self, estimate: float, current: float, goal: float) -> bool:
        """Whether the model is already within the tolerance of ``goal`` and a correction's best plan would land
        outside it (e.g. when every group's smallest cut overshoots); noted, and the correction is skipped.
        Short of the tolerance a correction always runs: a target is a reduction to reach."""
        now, planned = 1 - current / self.start, 1 - estimate / self.start
        if abs(now - goal) > self.tolerance or abs(planned - goal) <= self.tolerance:
            return False
        self.notes.append(f"correction: skipped, its closest plan ({planned:.4f}) lands outside the tolerance; "
                          f"what is reached ({now:.4f}) is within it")
        log.info(self.notes[-1])
        return True

    def _step_note(self, name: str, scale: float, groups: int, trials: int, estimate: float, after: float,
                   seconds: float) -> str:
        """The report line of one step."""
        if self.kind == "channels":
            ratios = self.roots.category_ratios(scale, self.config.max_ratio)
            return f"{name}: channel ratio per category {ratios}, {groups} groups pruned in {seconds:.2f} s"
        what = "greedy steps" if self.kind == "latency" else "estimates"
        detail = f" ({trials} {what}, estimated {1 - estimate / self.start:.4f})" if trials else ""
        if self.kind == "latency":
            how = f"widths aligned to {self.latency.align if self.latency else 1}"
        else:
            how = f"scale {scale:.4f}, channel ratio per category {self.roots.category_ratios(scale, self.config.max_ratio)}"
        return (f"{name}: {how}, {groups} groups pruned{detail}, measured {self.kind} reduction "
                f"{1 - after / self.start:.4f} in {seconds:.2f} s")

    def equalize(self) -> None:
        """``portable``: narrow the layer sets plugins name (``modprune_equal_width_layers``) to equal widths."""
        sets = self.ctx.equal_width_layers(self.model)
        with tracing_mode(self.model):
            done = equalize_widths(self.model, self.pruner.DG, sets, self.pruner.frozen_ids)
        self._note_fixes(sync_stored_sizes(self.model))
        if done.narrowed:
            self.notes.append(f"portable: {len(done.narrowed)} layers narrowed to equal widths "
                              f"({done.channels_removed} channels more than the target asked): "
                              f"{', '.join(done.narrowed[:6])}{' ...' if len(done.narrowed) > 6 else ''}")
            self._measure()
        if done.skipped:
            self.notes.append(f"portable: left unequal: {', '.join(done.skipped[:6])}")
        if not sets:
            self.notes.append("portable: no plugin names layers to keep equal in this model (nothing to do)")

    def _note_fixes(self, fixed: list[str]) -> None:
        """Notes on stored sizes set from the weights and on groups left alone (once each)."""
        if fixed:
            self.notes.append(f"stored sizes set from the weights: {', '.join(fixed[:6])}")
        names = {id(m): n for n, m in self.model.named_modules()}
        skipped = sorted(describe(names.get(id(m), "?"), m) for m in self.pruner.reshape_skipped)
        if skipped and not self._reshape_noted:
            self._reshape_noted = True
            self.notes.append(
                "groups left alone (a reshape folds their channels into positions, e.g. Linear -> view -> "
                f"ConvTranspose): {', '.join(skipped[:6])}"
            )

    def _choose_plan(self, step: int, steps: int, goal: float, current: float, check_final: bool) -> tuple[Plan, int, float]:
        """(plan, estimates made, estimated metric after it) for one step reaching ``goal``."""
        if goal <= 0:
            return Plan(), 0, current
        if self.kind == "channels":
            done = self.config.target * (step - 1) / steps
            return self.pruner.plan(1 - (1 - goal) / (1 - done)), 0, current
        if self.kind == "latency" and self.latency is not None:
            weights = dict(self.roots.base)
            if check_final:
                self._check_reachable(1 - self.latency.most(self.pruner, self.model, weights) / self.start)
            return self.latency.plan(self.pruner, self.model, (1 - goal) * self.start,
                                     self.plan_tolerance * self.start, weights, current)
        estimator = self._estimator()
        plans: dict[float, Plan] = {}
        values: dict[float, float] = {}

        def kept(scale: float) -> float:
            if scale not in values:
                plans[scale] = self.pruner.plan(scale)
                values[scale] = estimator.estimate(plans[scale]) / self.start
                log.debug("  search %d: scale %.5f -> estimated %.4f of %s removed (goal %.4f)", len(values), scale,
                         1 - values[scale], self.kind, goal)
            return values[scale]

        hi = self.roots.max_scale(self.config.max_ratio)
        if check_final:
            self._check_reachable(1 - kept(hi))
        result = search_scale(kept, 1 - goal, hi, tolerance=SEARCH_TOLERANCE)
        scale, estimate = result.scale, result.estimate
        if self.round_to and abs(estimate - (1 - goal)) > SEARCH_TOLERANCE:
            scale, estimate = _short_of(values, 1 - goal, (scale, estimate))
        return plans[scale], len(values), estimate * self.start

    def _check_reachable(self, most: float) -> None:
        """Raise when removing everything prunable cannot reach the final target."""
        if most >= self.config.target - TOLERANCE:
            return
        raise UnreachableTargetError(
            f"{self.kind} target {self.config.target} is unreachable: removing every prunable channel (up to "
            f"max_ratio {self.config.max_ratio} per layer) removes about {most:.3f}; protected categories: "
            f"{', '.join(self.config.protect) or 'none'}, protected modules: {', '.join(self.config.protect_modules) or 'none'}, "
            "plus modules protected by plugins. Lower the target, "
            "raise max_ratio or protect less",
            self.config.target,
        )

    # --- final checks -------------------------------------------------------------------------

    @torch.no_grad()
    def check_outputs(self) -> None:
        """Run the pruned model once; the shapes of the tensors it returns must not change.

        :raises UnsupportedModelError: the pruned model fails or its output shapes changed.
        """
        with module_stack(self.model) as stack:
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():  # shapes only: no autograd graph
                    out = call_model(self.model, self.inputs)
            except Exception as exc:  # a rule that slices wrongly breaks the forward
                raise unsupported_from(exc, self.model, stack, "running") from exc
            finally:
                self.model.train(was_training)
        shapes = [tuple(t.shape) for t in tensors_of(out)]
        changed = [
            f"output {i}: {before} -> {shapes[i] if i < len(shapes) else 'missing'}"
            for i, before in self.output_shapes.items()
            if i >= len(shapes) or shapes[i] != before
        ]
        if changed:
            raise UnsupportedModelError(
                f"pruning changed the outputs of {type(self.model).__name__} ({'; '.join(changed)}); a layer pruner "
                "or bare parameter rule sliced the wrong dimension. Protect the category of the layers producing "
                "these outputs",
                self.model,
            )
