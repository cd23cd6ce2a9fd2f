"""The :class:`Pruner` contract: plan (validate, change nothing), apply (change the model), outcome.

:func:`modprune.prune` calls :meth:`Pruner.plan` once, measures the model, then calls
:meth:`Pruner.apply` once with that plan. A pruner reports what it found in the returned
:class:`PruneOutcome`; it never writes into the :class:`PruneContext` (which is frozen).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.importance.base import Importance, ScoreContext

if TYPE_CHECKING:  # pragma: no cover
    from modprune.config import PruneConfig
    from modprune.detectors.base import Detector
    from modprune.detectors.classify import Categories

__all__ = ["NoOptions", "Pruner", "PruneContext", "PruneOutcome", "PrunePlan", "StepCallback"]

#: Called after each pruning step with (step number starting at 1, number of steps, model).
StepCallback = Callable[[int, int, nn.Module], None]


def _nothing(*_: Any, **__: Any) -> None:
    return None


def _empty(*_: Any, **__: Any) -> list[Any]:
    return []


@dataclass(frozen=True)
class PruneContext:
    """Everything a pruner may use besides the model and config (read-only).

    The callables are the pruning plugin hooks, already bound to every plugin:
    ``prepare_model(model, config)`` (``modprune_prepare_model``), ``protected_modules(model)``,
    ``unwrapped_parameters(model)``, ``removable_blocks(model)``, ``attention_heads(model)`` and
    ``equal_width_layers(model)`` (each a flat list over the plugins), ``finalize_model(model)``.
    """

    importance: Importance
    categories: Categories
    example_inputs: Any = None
    loss_fn: Callable[[Any], torch.Tensor] | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)
    on_step: StepCallback | None = None
    #: The registered detectors, to categorise a model a pruner rewrote.
    detectors: tuple[Detector, ...] = ()
    #: torch-pruning layer pruners by module type (``modprune_register_layer_pruners``).
    layer_pruners: Mapping[type, Any] = field(default_factory=dict)
    prepare_model: Callable[[nn.Module, PruneConfig], None] = _nothing
    protected_modules: Callable[[nn.Module], list[nn.Module]] = _empty
    unwrapped_parameters: Callable[[nn.Module], list[tuple[Any, int]]] = _empty
    #: ``resizable_outputs(model, outputs)``: returned tensors whose widths may change (``modprune_resizable_outputs``).
    resizable_outputs: Callable[[nn.Module, Any], list[Any]] = lambda _model, _outputs: []
    finalize_model: Callable[[nn.Module], None] = _nothing
    #: ``modprune_removable_blocks(model)``, flattened over the plugins (depth pruning's candidates).
    removable_blocks: Callable[[nn.Module], list[Any]] = _empty
    #: A :class:`modprune.measure.LatencyTable` for ``target_kind="latency"`` (None: measured on this machine).
    latency_table: Any = None
    #: ``attention_heads(model)``: the ``modprune_attention_heads`` layouts (a flat list over the plugins).
    attention_heads: Callable[[nn.Module], list[Any]] = _empty
    equal_width_layers: Callable[[nn.Module], list[tuple[nn.Module, ...]]] = _empty

    def score_context(self, model: nn.Module) -> ScoreContext:
        return ScoreContext(model, self.example_inputs, self.loss_fn, self.generator)

    def compute_gradients(self, model: nn.Module) -> None:
        """Fill ``.grad`` of every parameter from one forward/backward on the example inputs."""
        from modprune.pruners.gradients import compute_gradients

        compute_gradients(model, self.example_inputs, self.loss_fn)

    def classify(self, model: nn.Module) -> Categories:
        """Categories of ``model`` by the registered detectors (after a rewrite)."""
        from modprune.detectors.classify import classify

        return classify(model, self.detectors)


@dataclass(frozen=True)
class NoOptions:
    """The options of a pruner that takes none."""


@dataclass(frozen=True)
class PrunePlan:
    """What :meth:`Pruner.plan` decided; pruners subclass it to carry their own plan.

    ``config`` has ``target_kind`` resolved; ``options`` is the pruner's ``options_type`` instance
    built from ``config.pruner_options``.
    """

    config: PruneConfig
    options: Any = field(default_factory=NoOptions)


@dataclass(frozen=True)
class PruneOutcome:
    """What :meth:`Pruner.apply` found.

    :param notes: lines for the report (e.g. "attention protected: ...").
    :param achieved: the measured result when the report cannot recompute it (e.g. a channel
        ratio); None lets the report compute it from ``target_kind``.
    :param categories: categories of the pruned model when the pruner rewrote modules (None:
        the context's categories still describe it).
    :param macs: ``(before, after)`` MACs of one forward on the context's example inputs, when the
        pruner counted them exactly as :func:`modprune.measure.count_macs` does (the report then reuses
        them instead of counting again); None otherwise.
    :param latency: for a latency target, ``{"start_ms", "predicted_ms", "measured_ms",
        "prediction_error", "reliable", ...}`` of the pruned model; None otherwise.
    """

    notes: tuple[str, ...] = ()
    achieved: float | None = None
    categories: Categories | None = None
    macs: tuple[int, int] | None = None
    #: Latency target: predicted and measured latency of the pruned model and the error (None otherwise).
    latency: Mapping[str, Any] | None = None


class Pruner(ABC):
    """A pruning method, selected by ``PruneConfig.method``.

    ``requires`` says what the importance must score (``"weights"`` or ``"channels"``).
    ``target_kinds`` lists the ``target_kind`` values it accepts (the first is the default).
    ``options_type`` is a frozen dataclass whose fields are the accepted ``pruner_options``,
    validated in its ``__post_init__``.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[str] = ""
    description: ClassVar[str] = ""
    target_kinds: ClassVar[tuple[str, ...]] = ("nonzero",)
    options_type: ClassVar[type] = NoOptions

    def resolve(self, config: PruneConfig) -> PruneConfig:
        """``config`` with ``target_kind`` resolved, after checking it and ``pruner_options``.

        :raises ConfigError: the kind is not one of :attr:`target_kinds`, or an option is unknown
            or invalid (the message lists the valid ones).
        """
        kind = config.target_kind if config.target_kind is not None else self.target_kinds[0]
        if kind not in self.target_kinds:
            raise ConfigError(
                f"target_kind {kind!r} is not valid for method {self.name!r}; valid: {', '.join(self.target_kinds)}",
                kind,
            )
        self.parse_options(config.pruner_options)
        return config if kind == config.target_kind else dataclasses.replace(config, target_kind=kind)

    def parse_options(self, options: Mapping[str, Any]) -> Any:
        """An :attr:`options_type` instance from ``options``; unknown keys raise :class:`ConfigError`."""
        valid = [f.name for f in dataclasses.fields(self.options_type)]
        unknown = sorted(set(options) - set(valid), key=str)
        if unknown:
            raise ConfigError(
                f"pruner {self.name!r} got unknown pruner_options {', '.join(map(str, unknown))}; "
                f"valid: {', '.join(valid) or 'none'}",
                unknown,
            )
        return self.options_type(**dict(options))

    def counts_macs(self, config: PruneConfig) -> bool:
        """True when :meth:`apply` will return ``PruneOutcome.macs`` for ``config`` (with example inputs),
        so ``modprune.prune`` need not count MACs itself. Default: False."""
        return False

    def plan(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> PrunePlan:
        """Validate ``config`` against ``model`` and decide what to do; must not change the model.

        ``config`` comes from :meth:`resolve`. Raise a :class:`~modprune.ModpruneError` (e.g.
        :class:`~modprune.UnreachableTargetError`) when it cannot be applied. The default plan
        holds the config and the parsed options.
        """
        return PrunePlan(config, self.parse_options(config.pruner_options))

    @abstractmethod
    def apply(self, model: nn.Module, plan: PrunePlan, ctx: PruneContext) -> PruneOutcome:
        """Prune ``model`` in place as ``plan`` says and return what was found."""
