"""The public functions: list strategies, load recipes, prune, inspect."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from modprune.config import PruneConfig
from modprune.detectors.base import OTHER
from modprune.detectors.classify import Categories, classify
from modprune.exceptions import ConfigError, ModpruneError, UnsupportedModelError
from modprune.measure import count_macs
from modprune.plugins import ModpruneManager, call_hook, resolve
from modprune.pruners.base import PruneContext, PruneOutcome, StepCallback
from modprune.recipes import Recipe, recipe_from_file
from modprune.report import CategoryRow, PruneReport, category_table
from modprune.rollback import snapshot

__all__ = [
    "categorize",
    "list_detectors",
    "list_importances",
    "list_pruners",
    "list_recipes",
    "find_recipe",
    "get_recipe",
    "load_recipe",
    "prune",
    "resolve_config",
    "valid_categories",
]

log = logging.getLogger(__name__)


def list_detectors(pm: ModpruneManager | None = None) -> list[str]:
    """Names of the registered module detectors."""
    return resolve(pm).strategies.detectors.list()


def list_importances(pm: ModpruneManager | None = None) -> list[str]:
    """Names of the registered importance metrics."""
    return resolve(pm).strategies.importances.list()


def list_pruners(pm: ModpruneManager | None = None) -> list[str]:
    """Names of the registered pruners."""
    return resolve(pm).strategies.pruners.list()


def list_recipes(pm: ModpruneManager | None = None) -> list[str]:
    """Names of the registered recipes."""
    return resolve(pm).strategies.recipes.list()


def get_recipe(name: str, pm: ModpruneManager | None = None) -> Recipe:
    """A registered recipe by name."""
    return resolve(pm).strategies.recipes.get(name)


def find_recipe(name_or_path: str | os.PathLike[str], pm: ModpruneManager | None = None) -> Recipe:
    """A registered recipe, or a recipe YAML file (a path or a name ending in .yaml): config and fine-tuning."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text or Path(text).is_file():
        return recipe_from_file(text)
    return get_recipe(text, pm)


def load_recipe(name_or_path: str | os.PathLike[str], pm: ModpruneManager | None = None) -> PruneConfig:
    """The config of a registered recipe, or of a recipe YAML file (a path or a name ending in .yaml)."""
    return find_recipe(name_or_path, pm).config


def valid_categories(pm: ModpruneManager | None = None) -> list[str]:
    """Every category some registered detector can assign, plus ``other``."""
    return sorted({d.category for d in _detectors(resolve(pm))} | {OTHER})


def _detectors(pm: ModpruneManager) -> list[Any]:
    reg = pm.strategies.detectors
    return [reg.get(n) for n in reg.list()]


def categorize(model: nn.Module, pm: ModpruneManager | None = None) -> Categories:
    """Categories of every module and parameter of ``model``."""
    return classify(model, _detectors(resolve(pm)))


def _check_categories(config: PruneConfig, pm: ModpruneManager) -> None:
    valid = valid_categories(pm)
    named = set(config.category_ratios) | set(config.protect)
    unknown = sorted(named - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown categories {unknown} in category_ratios/protect; valid: {', '.join(valid)}", unknown
        )


def resolve_config(config: PruneConfig, pm: ModpruneManager | None = None) -> PruneConfig:
    """``config`` checked against its pruner and importance, with ``target_kind`` resolved.

    :raises ConfigError: unknown method, importance, category, target kind or option (the message
        lists the valid ones), or an importance that does not score what the pruner needs.
    """
    if not isinstance(config, PruneConfig):
        raise ConfigError(f"prune() needs a PruneConfig, got {type(config).__name__}", config)
    pm = resolve(pm)
    strategies = pm.strategies
    pruner = strategies.pruners.get(config.method)
    importance = strategies.importances.get(config.importance).configure(config.importance_options)
    if pruner.requires and pruner.requires not in importance.scores:
        valid = [n for n, i in strategies.importances.items() if pruner.requires in i.scores]
        raise ConfigError(
            f"importance {config.importance!r} does not score {pruner.requires} as pruner {config.method!r} "
            f"needs; valid: {', '.join(valid)}",
            config.importance,
        )
    _check_categories(config, pm)
    return pruner.resolve(config)


def _context(config: PruneConfig, pm: ModpruneManager, categories: Categories, **inputs: Any) -> PruneContext:
    """The read-only context of one prune: strategies and the structured hooks bound to ``pm``
    (through :func:`call_hook`, so a plugin whose hook raises is named in the error)."""

    def protected_modules(model: nn.Module) -> list[nn.Module]:
        return [m for found in call_hook(pm, "modprune_protected_modules", model=model) for m in found or []]

    def unwrapped_parameters(model: nn.Module) -> list[tuple[Any, int]]:
        return [p for found in call_hook(pm, "modprune_unwrapped_parameters", model=model) for p in found or []]

    def resizable_outputs(model: nn.Module, outputs: Any) -> list[Any]:
        return [t for found in call_hook(pm, "modprune_resizable_outputs", model=model, outputs=outputs)
                for t in found or []]

    def removable_blocks(model: nn.Module) -> list[Any]:
        return [b for found in call_hook(pm, "modprune_removable_blocks", model=model) for b in found or []]

    def attention_heads(model: nn.Module) -> list[Any]:
        return [h for found in call_hook(pm, "modprune_attention_heads", model=model) for h in found or []]

    def equal_width_layers(model: nn.Module) -> list[tuple[nn.Module, ...]]:
        return [tuple(s) for found in call_hook(pm, "modprune_equal_width_layers", model=model) for s in found or []]

    return PruneContext(
        importance=pm.strategies.importances.get(config.importance).configure(config.importance_options),
        categories=categories,
        generator=torch.Generator().manual_seed(config.seed),
        detectors=tuple(_detectors(pm)),
        layer_pruners=pm.strategies.layer_pruners,
        prepare_model=lambda model, cfg: call_hook(pm, "modprune_prepare_model", model=model, config=cfg),
        protected_modules=protected_modules,
        unwrapped_parameters=unwrapped_parameters,
        resizable_outputs=resizable_outputs,
        finalize_model=lambda model: call_hook(pm, "modprune_finalize_model", model=model),
        removable_blocks=removable_blocks,
        attention_heads=attention_heads,
        equal_width_layers=equal_width_layers,
        **inputs,
    )


def prune(
    model: nn.Module,
    config: PruneConfig,
    example_inputs: Any = None,
    *,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    on_step: StepCallback | None = None,
    pm: ModpruneManager | None = None,
    latency_table: Any = None,
) -> PruneReport:
    """Prune ``model`` in place as ``config`` says and report what changed.

    :param example_inputs: a batch the model accepts; needed for MACs, structured pruning and
        gradient-based importance.
    :param loss_fn: maps the model's output to a scalar loss (Taylor importance); default: a
        label-free proxy (mean squared output).
    :param on_step: called after each step of an iterative schedule (e.g. to fine-tune).
    :param latency_table: for ``target_kind="latency"``: a :class:`modprune.measure.LatencyTable` to plan
        and measure with (default: one measured on this machine, cached under the user's cache directory).
    :raises ModpruneError: on bad config or a model that cannot be pruned as asked.

    A prune that fails at any stage (planning, applying, the plugins' finalize hooks, measuring the
    result), with any exception, leaves ``model`` exactly as it was: the same object, and the same
    submodule and parameter objects, with their pre-prune structure, values, ``requires_grad`` and
    training flags; then the exception propagates. For this, ``prune`` keeps a deep copy of the model
    while it runs (twice the model's memory). A model that cannot be deep-copied is pruned without
    that guarantee (a warning says so).
    """
    pm = resolve(pm)
    model = _unwrap(model, pm)
    config = resolve_config(config, pm)
    saved = snapshot(model)
    try:
        return _prune(model, config, pm, example_inputs=example_inputs, loss_fn=loss_fn, on_step=on_step,
                      latency_table=latency_table)
    except BaseException:
        if saved is not None:
            saved.restore(model)
            log.debug("prune failed; the model was restored to its state before the prune")
        raise


def _prune(model: nn.Module, config: PruneConfig, pm: ModpruneManager, **inputs: Any) -> PruneReport:
    """Plan, apply and report one prune of ``model`` (modified in place)."""
    example_inputs = inputs["example_inputs"]
    pruner = pm.strategies.pruners.get(config.method)
    log.info("preparing: classifying %s's layers for %s pruning", type(model).__name__, config.method)
    categories = categorize(model, pm)
    ctx = _context(config, pm, categories, **inputs)
    log.info("planning: %s target %.3f of %s", config.method, config.target, config.target_kind)
    plan = pruner.plan(model, config, ctx)  # e.g. an unreachable target: raise before anything changes
    pruner_counts = example_inputs is not None and pruner.counts_macs(config)
    if example_inputs is not None and not pruner_counts:
        log.info("measuring MACs before pruning")
    macs_before = None if pruner_counts else _macs(model, example_inputs)
    shapes_before = _shapes(model)
    table_before = category_table(model, categories)
    started = time.perf_counter()
    outcome = pruner.apply(model, plan, ctx)
    seconds = time.perf_counter() - started
    if not isinstance(outcome, PruneOutcome):
        raise ModpruneError(f"pruner {config.method!r} returned {outcome!r} from apply(), not a PruneOutcome", pruner)
    table_after = category_table(model, outcome.categories or categories)
    log.info("measuring the pruned model")
    macs_before, macs_after = _macs_after(model, example_inputs, macs_before, shapes_before, outcome)
    report = _report(config, table_before, table_after, macs_before, macs_after, outcome, seconds)
    log.info("pruned: %s %.4f of %s (target %.4f)", config.method, report.achieved, config.target_kind, config.target)
    return report


def _unwrap(model: Any, pm: ModpruneManager) -> nn.Module:
    """The module to prune: a plugin may unwrap a wrapper (ultralytics' ``YOLO`` -> its ``.model``)."""
    inner = pm.hook.modprune_unwrap_model(model=model)
    if inner is not None:
        if not isinstance(inner, nn.Module):
            raise ModpruneError(f"a plugin unwrapped {type(model).__name__} into {type(inner).__name__}, not a "
                                "torch.nn.Module", model)
        return inner
    if not isinstance(model, nn.Module):
        raise ModpruneError(f"prune() needs a torch.nn.Module, got {type(model).__name__}", model)
    return model


def _report(
    config: PruneConfig,
    table_before: dict[str, tuple[int, int]],
    table_after: dict[str, tuple[int, int]],
    macs_before: int | None,
    macs_after: int | None,
    outcome: PruneOutcome,
    seconds: float,
) -> PruneReport:
    (params_before, nonzero_before), (params_after, nonzero_after) = _totals(table_before), _totals(table_after)
    achieved = outcome.achieved
    if achieved is None:
        achieved = _achieved(config, params_before, params_after, nonzero_before, nonzero_after, macs_before, macs_after)
    return PruneReport(
        method=config.method,
        importance=config.importance,
        target=config.target,
        target_kind=config.target_kind,
        achieved=achieved,
        params_before=params_before,
        params_after=params_after,
        nonzero_before=nonzero_before,
        nonzero_after=nonzero_after,
        macs_before=macs_before,
        macs_after=macs_after,
        seconds=seconds,
        steps=config.steps,
        categories=_rows(table_before, table_after, config),
        notes=list(outcome.notes),
        config=config.to_dict(),
        latency=dict(outcome.latency) if outcome.latency is not None else None,
    )


def _shapes(model: nn.Module) -> list[tuple[str, type, tuple[tuple[int, ...], ...]]]:
    """Every module's name, type and own parameter/buffer shapes (parametrizations seen through)."""
    out = []
    for name, module in model.named_modules():
        if ".parametrizations." in f".{name}." or isinstance(module, parametrize.ParametrizationList):
            continue
        tensors = [getattr(module, attr) for attr in module.parametrizations] if parametrize.is_parametrized(module) else []
        tensors += [t for _, t in module.named_parameters(recurse=False)]
        tensors += [t for _, t in module.named_buffers(recurse=False)]
        out.append((name, type(module), tuple(tuple(t.shape) for t in tensors)))
    return out


def _macs_after(
    model: nn.Module, example_inputs: Any, macs_before: int | None, shapes_before: list[Any], outcome: PruneOutcome
) -> tuple[int | None, int | None]:
    """``(MACs before, MACs after)`` for the report, counting as little as possible: the pruner's own
    exact counts when it gives them; the count before when no module, parameter or buffer changed shape
    (zeroed weights still cost their multiplies); otherwise one more forward."""
    if example_inputs is None:
        return None, None
    if outcome.macs is not None:
        return int(outcome.macs[0]), int(outcome.macs[1])
    if macs_before is None:  # the pruner said it would count, then did not
        return None, _macs(model, example_inputs)
    if _shapes(model) == shapes_before:
        return macs_before, macs_before
    return macs_before, _macs(model, example_inputs)


def _totals(table: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(params, nonzero) of the whole model from its category table."""
    return sum(p for p, _ in table.values()), sum(nz for _, nz in table.values())


def _macs(model: nn.Module, example_inputs: Any) -> int | None:
    """MACs of one forward on ``example_inputs`` (None without inputs); a failing forward is the
    caller's error (inputs the model does not accept), reported as :class:`UnsupportedModelError`."""
    if example_inputs is None:
        return None
    try:
        return count_macs(model, example_inputs)
    except ModpruneError:
        raise
    except Exception as exc:  # the model's own forward can fail in any way on bad inputs
        shape = tuple(example_inputs.shape) if isinstance(example_inputs, torch.Tensor) else type(example_inputs).__name__
        raise UnsupportedModelError(
            f"the model's forward failed on example_inputs {shape}: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}",
            model,
        ) from exc


def _achieved(
    config: PruneConfig, p0: int, p1: int, nz0: int, nz1: int, m0: int | None, m1: int | None
) -> float:
    if config.target_kind == "macs" and m0:
        return 1 - (m1 or 0) / m0
    if config.target_kind == "params" and p0:
        return 1 - p1 / p0
    return 1 - nz1 / nz0 if nz0 else 0.0


def _rows(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], config: PruneConfig) -> list[CategoryRow]:
    rows = []
    for cat in sorted(set(before) | set(after)):
        p0, nz0 = before.get(cat, (0, 0))
        p1, nz1 = after.get(cat, (0, 0))
        rows.append(CategoryRow(cat, p0, p1, nz0, nz1, config.ratio_for(cat), cat in config.protect))
    return rows
