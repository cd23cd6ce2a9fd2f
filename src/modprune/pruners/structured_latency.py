"""The latency target of the structured pruner: a latency table, a greedy allocation, measured checks.

``target_kind="latency"`` with ``target=0.5`` asks for half the latency. How it is reached:

1. **Start**: the dense model's latency is measured once through the table (its fused form, timed in
   interleaved rounds: :meth:`~modprune.measure.latency_table.LatencyTable.measure_models`), and what
   the table's per-layer costs do not explain is kept as a residual
   (:func:`~modprune.measure.latency_model.calibrate_residual`). A deterministic table that times no
   models makes the prediction the measurement.
2. **Allocation** (in the spirit of HALP: Shen et al., "Structural Pruning via Latency-Saliency
   Knapsack", NeurIPS 2022): every dependency group is a unit whose channels can go ``align`` at a
   time (per channel group for grouped convolutions), keeping widths on the CPU's vector multiple. A
   greedy loop removes, each time, the step with the most latency saved per importance lost (the
   importance divided by the group's category ratio), skipping steps the table says are not faster
   (looking up to :data:`LOOKAHEAD` steps ahead), until the estimated latency reaches the goal; the
   last step is the one closest to the goal among those reaching it.
3. **Check**: after pruning, the pruned model is measured again (or predicted, with a deterministic
   table); when it falls short, a corrective step aims at a goal rescaled by the measured / predicted
   ratio. The report carries the predicted and measured latency and their error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from modprune.fusion import fuse
from modprune.measure.latency_model import (LatencyPrediction, LayerCall, Residual, calibrate_residual, layer_calls,
                                            predict_latency)
from modprune.measure.latency_table import LatencyTable, LayerKey
from modprune.pruners.structured_graph import GraphPruner, GroupUnit, Plan

__all__ = ["LOOKAHEAD", "LatencyGoal", "greedy_counts"]

log = logging.getLogger(__name__)

#: How many aligned steps further a unit looks when its next step is not faster.
LOOKAHEAD = 3


@dataclass
class _Step:
    """A candidate removal: unit index, channels per channel group removed after it, latency saved,
    importance lost (weighted)."""

    unit: int
    removed: int
    saved: float
    lost: float


class _State:
    """Widths of every known layer call under per-unit removals, and their estimated latency."""

    def __init__(self, calls: list[LayerCall], table: LatencyTable, residual: Residual) -> None:
        self.keys = [c.key for c in calls]
        self.table, self.residual = table, residual
        self.by_module: dict[int, list[int]] = {}
        for i, call in enumerate(calls):
            self.by_module.setdefault(id(call.module), []).append(i)
        self.lost = [[0.0, 0.0] for _ in calls]  # (inputs, outputs) lost per call
        self.cost = [table.cost_ms(k) for k in self.keys]
        self.acts = [k.output_elements() for k in self.keys]

    def key(self, i: int, lost: list[float]) -> LayerKey:
        base = self.keys[i]
        return base.with_widths(max(1, base.in_channels - round(lost[0])), max(1, base.out_channels - round(lost[1])))

    def total(self) -> float:
        return sum(self.cost) + self.residual.scaled(sum(self.acts))

    def changes(self, unit: GroupUnit, channels: int) -> dict[int, list[float]]:
        """The calls ``channels`` more root channels of ``unit`` would change, with their new losses."""
        out: dict[int, list[float]] = {}
        for (module, side), per_channel in unit.reach.items():
            for i in self.by_module.get(id(module), ()):
                lost = out.setdefault(i, list(self.lost[i]))
                lost[1 if side == "out" else 0] += per_channel * channels
        return out

    def delta(self, changes: dict[int, list[float]]) -> tuple[float, dict[int, tuple[LayerKey, float]]]:
        """Latency saved by ``changes`` (and the new key and cost of each changed call)."""
        new = {}
        saved, acts = 0.0, sum(self.acts)
        for i, lost in changes.items():
            key = self.key(i, lost)
            if not _valid(key):
                return float("-inf"), {}
            cost = self.table.cost_ms(key)
            new[i] = (key, cost)
            saved += self.cost[i] - cost
            acts += key.output_elements() - self.acts[i]
        return saved + self.residual.scaled(sum(self.acts)) - self.residual.scaled(acts), new

    def commit(self, changes: dict[int, list[float]], new: dict[int, tuple[LayerKey, float]]) -> None:
        for i, lost in changes.items():
            self.lost[i] = lost
            self.cost[i] = new[i][1]
            self.acts[i] = new[i][0].output_elements()


def _valid(key: LayerKey) -> bool:
    return key.in_channels % key.groups == 0 and key.out_channels % key.groups == 0


def _next_widths(kept: int, keep: int, align: int) -> list[int]:
    """Widths below ``kept`` a unit may step to: the next multiples of ``align``, down to ``keep``."""
    widths = []
    width = kept
    while len(widths) < LOOKAHEAD:
        width = (width - 1) // align * align if align > 1 else width - 1
        if width < max(1, keep):
            break
        widths.append(width)
    return widths


def _candidate(state: _State, units: list[GroupUnit], u: int, removed: int, weight: float, align: int) -> _Step | None:
    """The best next step of unit ``u`` (None: it cannot shrink, or no step within reach is faster)."""
    unit = units[u]
    if weight <= 0:
        return None
    for width in _next_widths(unit.size - removed, unit.keep, align):
        more = unit.size - width
        saved, _ = state.delta(state.changes(unit, (more - removed) * unit.ch_groups))
        if saved > 0:
            lost = sum(unit.scores[removed:more]) * unit.ch_groups / weight
            return _Step(u, more, saved, max(lost, 1e-12))
    return None


def greedy_counts(units: list[GroupUnit], weights: list[float], state: _State, goal_ms: float, *, align: int,
                  tolerance_ms: float) -> tuple[dict[Any, int], float, int]:
    """Channels per channel group to remove from each unit so that the estimated latency reaches
    ``goal_ms``: ``(counts by root, estimated ms, steps taken)``."""
    removed = [0] * len(units)
    candidates = {u: _candidate(state, units, u, 0, weights[u], align) for u in range(len(units))}
    now, steps = state.total(), 0
    while now > goal_ms:
        options = [c for c in candidates.values() if c is not None]
        if not options:
            break
        step = max(options, key=lambda c: (c.saved / c.lost, -c.unit))
        if now - step.saved < goal_ms - tolerance_ms:  # overshoots: the closest landing, else a smaller step
            landing = [c for c in options if goal_ms - tolerance_ms <= now - c.saved <= goal_ms]
            if landing:
                step = min(landing, key=lambda c: (c.lost, c.unit))
            else:
                below = [c for c in options if now - c.saved > goal_ms]
                step = max(below, key=lambda c: (c.saved, -c.unit)) if below else min(options, key=lambda c: c.saved)
        unit = units[step.unit]
        changes = state.changes(unit, (step.removed - removed[step.unit]) * unit.ch_groups)
        saved, new = state.delta(changes)
        state.commit(changes, new)
        removed[step.unit] = step.removed
        now -= saved
        steps += 1
        touched = set(changes)
        for u, other in enumerate(units):
            if u == step.unit or any(i in touched for m, _ in other.reach for i in state.by_module.get(id(m), ())):
                candidates[u] = _candidate(state, units, u, removed[u], weights[u], align)
    return {units[u].root: k for u, k in enumerate(removed) if k > 0}, now, steps


class LatencyGoal:
    """The latency side of one structured run: the table, the dense reference, estimates and plans."""

    def __init__(self, model: nn.Module, example_inputs: Any, table: LatencyTable, align: int) -> None:
        self.table, self.inputs, self.align = table, example_inputs, align
        self.dense: nn.Module | None = None
        timed = None
        if table.times_models:
            self.dense = fuse(model)
            timed = table.measure_models({"dense": self.dense}, example_inputs)
        measured = timed["ms"]["dense"] if timed else None
        self.residual = calibrate_residual(model, example_inputs, table, measured_ms=measured)
        self.start_ms = measured if measured is not None else predict_latency(model, example_inputs, table).total_ms
        self.predicted_ms = self.start_ms
        self.prediction: LatencyPrediction | None = None
        self.measured_ms: float | None = measured
        self.reliable: bool | None = timed["reliable"] if timed else None
        self.timed_models = timed is not None

    def measure(self, model: nn.Module) -> float:
        """The latency of ``model`` now, in the starting model's milliseconds: measured against the dense
        reference when the table times models (the ratio of an interleaved run), else predicted."""
        self.prediction = predict_latency(model, self.inputs, self.table, self.residual)
        self.predicted_ms = self.prediction.total_ms
        if self.dense is None:
            return self.predicted_ms
        timed = self.table.measure_models({"dense": self.dense, "pruned": fuse(model)}, self.inputs)
        if timed is None:
            return self.predicted_ms
        ms = timed["ms"]
        ratio = timed.get("ratios", {}).get("pruned", ms["pruned"] / ms["dense"])
        self.reliable = bool(timed["reliable"])
        self.measured_ms = self.start_ms * ratio
        return self.measured_ms

    def plan(self, pruner: GraphPruner, model: nn.Module, goal_ms: float, tolerance_ms: float,
             weights: dict[Any, float], current_ms: float) -> tuple[Plan, int, float]:
        """``(plan, greedy steps, estimated ms)`` of one step bringing the latency to ``goal_ms``.

        The goal is rescaled by predicted / measured latency now, so a table that under- or over-estimates
        the real model still aims at the measured goal."""
        units = pruner.units()
        state = _State(layer_calls(model, self.inputs, self.table.threads), self.table, self.residual)
        predicted = state.total()
        scale = predicted / current_ms if current_ms > 0 else 1.0
        counts, estimate, steps = greedy_counts(units, [weights.get(u.root, 0.0) for u in units], state,
                                                goal_ms * scale, align=self.align, tolerance_ms=tolerance_ms * scale)
        plan = pruner.plan_counts(counts, {u.root: u.size for u in units})
        return plan, steps, estimate / scale

    def most(self, pruner: GraphPruner, model: nn.Module, weights: dict[Any, float]) -> float:
        """The estimated latency with every unit at its narrowest aligned width (reachability check)."""
        units = pruner.units()
        state = _State(layer_calls(model, self.inputs, self.table.threads), self.table, self.residual)
        for unit in units:
            if weights.get(unit.root, 0.0) <= 0:
                continue
            width = max(1, unit.keep)
            width = -(-width // self.align) * self.align if self.align > 1 else width
            if width < unit.size:
                changes = state.changes(unit, (unit.size - width) * unit.ch_groups)
                saved, new = state.delta(changes)
                if new:
                    state.commit(changes, new)
        return state.total()

    def report(self) -> dict[str, Any]:
        """Predicted and measured latency of the pruned model (and the error), for the prune report."""
        error = None
        if self.measured_ms:
            error = (self.predicted_ms - self.measured_ms) / self.measured_ms
        return {"backend": self.table.backend, "threads": self.table.threads, "fingerprint": self.table.fingerprint(),
                "start_ms": self.start_ms, "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms,
                "prediction_error": error, "residual_ms": self.residual.ms, "reliable": self.reliable,
                "align": self.align, "layer_calls": self.prediction.calls if self.prediction else None,
                "noisy_layer_calls": self.prediction.noisy_calls if self.prediction else None}
