"""The :class:`Pruner` interface and the context every pruner receives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from modprune.importance.base import Importance, ScoreContext

if TYPE_CHECKING:  # pragma: no cover
    from modprune.config import PruneConfig
    from modprune.detectors.classify import Categories
    from modprune.plugins import ModpruneManager

__all__ = ["Pruner", "PruneContext", "StepCallback"]

#: Called after each pruning step with (step number starting at 1, number of steps, model).
StepCallback = Callable[[int, int, nn.Module], None]


@dataclass
class PruneContext:
    """Everything a pruner needs besides the model and config."""

    pm: ModpruneManager
    importance: Importance
    categories: Categories
    example_inputs: Any = None
    loss_fn: Callable[[Any], torch.Tensor] | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)
    on_step: StepCallback | None = None
    #: Lines the pruner wants in the report (e.g. "attention protected: ...").
    notes: list[str] = field(default_factory=list)
    #: What the pruner measured for targets the report cannot recompute (e.g. channel ratio).
    achieved: float | None = None

    def score_context(self, model: nn.Module) -> ScoreContext:
        return ScoreContext(model, self.example_inputs, self.loss_fn, self.generator)

    def compute_gradients(self, model: nn.Module) -> None:
        """Fill ``.grad`` of every parameter from one forward/backward on the example inputs."""
        from modprune.pruners.gradients import compute_gradients

        compute_gradients(model, self.example_inputs, self.loss_fn)


class Pruner(ABC):
    """A pruning method, selected by ``PruneConfig.method``.

    ``requires`` says what the importance must score (``"weights"`` or ``"channels"``).
    :meth:`check` validates without changing anything; :meth:`prune` changes ``model`` in place
    to meet ``config.target``.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def check(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> None:
        """Raise a :class:`~modprune.ModpruneError` if ``config`` cannot be applied to ``model``.

        Called by :func:`modprune.prune` before anything changes (the default accepts everything).
        Must not modify the model.
        """

    @abstractmethod
    def prune(self, model: nn.Module, config: PruneConfig, ctx: PruneContext) -> None:
        """Prune ``model`` in place."""
