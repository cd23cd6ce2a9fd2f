"""Sensitivity analysis: how much a proxy metric suffers when one part of a model alone is pruned.

For each unit (a module category, or one convolution / linear layer) and each ratio of a grid, a copy of
the model loses that fraction of the unit's output channels (structured pruning, ``target_kind:
channels``; every other category at ratio 0, so only channels coupled to the unit move with it) and is
scored by a proxy without fine-tuning. The proxy is any ``score(model) -> {metric: value}``; for
ultralytics detectors :class:`modprune.integrations.ultralytics.proxy.ProxyScorer` gives the validation
loss and mAP on a held-out subset.

Categories come from modprune's detectors (:func:`modprune.categorize`). A single layer is singled out
by a detector registered on the plugin manager for the duration of one prune, matching that module
object (by identity, not by name) into the category :data:`LAYER_CATEGORY`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from torch import nn

from modprune import api
from modprune.config import PruneConfig
from modprune.detectors.base import Detector
from modprune.exceptions import ConfigError, ModpruneError, UnreachableTargetError
from modprune.hookspecs import hookimpl
from modprune.plugins import ModpruneManager, call_hook, resolve

__all__ = ["BY", "DEFAULT_RATIOS", "LAYER_CATEGORY", "Score", "SensitivityCurve", "SensitivityResult",
           "prunable_units", "sensitivity"]

log = logging.getLogger(__name__)

#: What a unit is: a module category or one layer.
BY = ("category", "layer")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
#: The category a single layer is put in while ``by="layer"`` prunes it.
LAYER_CATEGORY = "sensitivity_layer"
#: ``score(model) -> {metric: value}``: the proxy, on an unpruned or pruned model (not modified).
Score = Callable[[nn.Module], Mapping[str, float]]
Progress = Callable[[str], None]


@dataclass
class SensitivityCurve:
    """One unit's points: ``{"ratio", "macs_reduction", "params_reduction", "seconds", metrics...}`` each,
    or ``{"ratio", "error"}`` where pruning failed; ``note`` says why a unit has no points."""

    unit: str
    points: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


@dataclass
class SensitivityResult:
    """The baseline metrics (unpruned), the ratio grid and one curve per unit."""

    by: str
    ratios: list[float]
    baseline: dict[str, float]
    curves: list[SensitivityCurve]
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def metrics(self) -> list[str]:
        """The proxy's metric names."""
        return list(self.baseline)

    def plot(self, path: Any, metrics: Sequence[str] | None = None, *, fmt: str | None = None) -> None:
        """Ratio against metric, one line per unit, one panel per metric (matplotlib, ``plots`` extra);
        ``fmt`` (``png``, ``svg``...) defaults to what the file name says."""
        from modprune.workflows.sensitivity_plot import plot_sensitivity  # noqa: PLC0415

        plot_sensitivity(self, path, metrics, fmt=fmt)


def _layer_types(pm: ModpruneManager) -> tuple[type, ...]:
    custom = tuple(t for t in pm.strategies.layer_pruners if isinstance(t, type))
    return (nn.modules.conv._ConvNd, nn.Linear, *custom)


def prunable_units(model: nn.Module, by: str = "category", *, protect: Sequence[str] = (),
                   pm: ModpruneManager | None = None) -> list[str]:
    """The units ``sensitivity`` walks: categories holding a convolution / linear layer (or a layer type a
    plugin prunes), or those layers' qualified names; protected categories and the modules plugins protect
    (``modprune_protected_modules``) left out."""
    if by not in BY:
        raise ConfigError(f"by={by!r} is not valid; valid: {', '.join(BY)}", by)
    pm = resolve(pm)
    categories = api.categorize(model, pm)
    protected = {id(m) for found in call_hook(pm, "modprune_protected_modules", model=model) for top in found or []
                 for m in top.modules()}
    layers = [(n, categories.modules.get(n, "other")) for n, m in model.named_modules()
              if isinstance(m, _layer_types(pm)) and id(m) not in protected]
    layers = [(n, c) for n, c in layers if c not in protect]
    if by == "layer":
        return [n for n, _ in layers]
    return sorted({c for _, c in layers})


class _LayerDetector:
    """A plugin whose detector puts one module object in :data:`LAYER_CATEGORY`."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    @hookimpl
    def modprune_register_detectors(self) -> list[Detector]:
        return [Detector(name="sensitivity-layer", category=LAYER_CATEGORY, predicate=self._matches,
                         priority=10**6, description="the layer a sensitivity analysis prunes")]

    def _matches(self, module: nn.Module, _name: str) -> bool:
        return module is self.module


def _unit_config(base: PruneConfig, unit: str, ratio: float, present: Sequence[str]) -> PruneConfig:
    """Structured, ``ratio`` of the unit's channels, every other category at 0."""
    zero = {c: 0.0 for c in present if c != unit}
    return dataclasses.replace(base, method="structured", target=ratio, target_kind="channels",
                               category_ratios=zero, default_ratio=1.0, steps=1)


def _prune_unit(model: nn.Module, by: str, unit: str, ratio: float, base: PruneConfig, example_inputs: Any,
                pm: ModpruneManager) -> tuple[nn.Module, Any]:
    """A pruned copy of ``model`` and its report."""
    work = copy.deepcopy(model)
    if by == "category":
        present = api.categorize(work, pm).names()
        return work, api.prune(work, _unit_config(base, unit, ratio, present), example_inputs, pm=pm)
    plugin = _LayerDetector(dict(work.named_modules())[unit])
    pm.register(plugin, name=f"sensitivity-layer@{id(plugin):x}")
    try:
        present = [c for c in api.categorize(work, pm).names() if c != LAYER_CATEGORY]
        config = _unit_config(base, LAYER_CATEGORY, ratio, present)
        return work, api.prune(work, config, example_inputs, pm=pm)
    finally:
        pm.unregister(plugin)


def _point(ratio: float, report: Any, metrics: Mapping[str, float], seconds: float) -> dict[str, Any]:
    macs = 1 - report.macs_after / report.macs_before if report.macs_before else None
    params = 1 - report.params_after / report.params_before if report.params_before else None
    return {"ratio": ratio, "macs_reduction": macs, "params_reduction": params, "seconds": round(seconds, 3),
            **{k: float(v) for k, v in metrics.items()}}


def _curve(model: nn.Module, by: str, unit: str, ratios: Sequence[float], score: Score, base: PruneConfig,
           example_inputs: Any, pm: ModpruneManager) -> Iterator[dict[str, Any]]:
    """The points of one unit; stops at the first ratio the unit cannot be pruned at all."""
    for ratio in ratios:
        started = time.perf_counter()
        try:
            work, report = _prune_unit(model, by, unit, ratio, base, example_inputs, pm)
        except UnreachableTargetError as exc:
            yield {"ratio": ratio, "error": str(exc), "unprunable": True}
            return
        except ModpruneError as exc:
            yield {"ratio": ratio, "error": str(exc)}
            continue
        if report.params_after == report.params_before and report.macs_after == report.macs_before:
            yield {"ratio": ratio, "error": "pruning it alone removes nothing (its channels are protected or kept "
                                            "for the outputs)", "unprunable": True}
            return
        yield _point(ratio, report, score(work), time.perf_counter() - started)


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    out = []
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise ConfigError(f"sensitivity ratios must be numbers in (0, 1), got {r!r}", r)
        out.append(float(r))
    if not out:
        raise ConfigError("sensitivity needs at least one ratio", ratios)
    return sorted(set(out))


def sensitivity(
    model: nn.Module,
    score: Score,
    example_inputs: Any,
    *,
    by: str = "category",
    ratios: Sequence[float] = DEFAULT_RATIOS,
    units: Sequence[str] | None = None,
    config: PruneConfig | None = None,
    progress: Progress | None = None,
    pm: ModpruneManager | None = None,
) -> SensitivityResult:
    """Score ``model`` with each unit pruned alone at each ratio (on copies; ``model`` is left as it was).

    :param score: the proxy (see :data:`Score`); called once on ``model``, then once per point.
    :param example_inputs: a batch the model accepts (structured pruning traces it).
    :param by: ``category`` or ``layer`` (see :func:`prunable_units`).
    :param ratios: fractions of the unit's output channels to remove, each in (0, 1).
    :param units: only these categories / layer names (default: every prunable one).
    :param config: the base config: importance, scope, protect, protect_modules, pruner_options
        (``round_to``) and seed are taken from it; method, target and ratios are set per point.
    :param progress: called with one line per point.
    :raises ConfigError: bad ``by``, ratios or unit names.
    """
    pm = resolve(pm)
    base = config or PruneConfig(method="structured", importance="l1")
    grid = _check_ratios(ratios)
    valid = prunable_units(model, by, protect=base.protect, pm=pm)
    chosen = list(units) if units is not None else valid
    unknown = [u for u in chosen if u not in valid]
    if unknown:
        raise ConfigError(f"unknown {by} units {unknown}; valid: {', '.join(valid) or 'none'}", unknown)
    say = progress or (lambda line: log.info("%s", line))
    started = time.perf_counter()
    baseline = {k: float(v) for k, v in score(model).items()}
    say(f"baseline: {_metrics_line(baseline)}")
    curves = []
    for unit in chosen:
        curve = SensitivityCurve(unit)
        for point in _curve(model, by, unit, grid, score, base, example_inputs, pm):
            if point.pop("unprunable", False):
                curve.note = point["error"]
                say(f"{unit}: not prunable on its own ({point['error']})")
                break
            curve.points.append(point)
            say(f"{unit} @ {point['ratio']:.2f}: " + (point.get("error") or _metrics_line(point)))
        curves.append(curve)
    return SensitivityResult(by, grid, baseline, curves, round(time.perf_counter() - started, 2), base.to_dict())


def _metrics_line(values: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in values.items() if k not in ("ratio", "seconds") and isinstance(v, (int, float))}
    return ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
