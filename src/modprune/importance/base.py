"""The :class:`Importance` interface shared by every metric."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from modprune.exceptions import ConfigError

__all__ = ["Importance", "ScoreContext", "WEIGHTS", "CHANNELS"]

WEIGHTS = "weights"
CHANNELS = "channels"


@dataclass
class ScoreContext:
    """What a metric may use while scoring: the model, example inputs, a loss, a seeded generator."""

    model: nn.Module
    example_inputs: Any = None
    loss_fn: Callable[[Any], torch.Tensor] | None = None
    generator: torch.Generator | None = None


class Importance(ABC):
    """An importance metric.

    Subclasses set ``name`` and ``scores`` (a subset of ``{"weights", "channels"}``) and override
    :meth:`weight_scores` (unstructured) and/or :meth:`channel_importance` (structured).
    ``needs_gradients`` metrics get ``.grad`` filled before scoring (see :func:`modprune.api.prune`).
    Options come from ``PruneConfig.importance_options`` through :meth:`configure`.
    """

    name: ClassVar[str] = ""
    scores: ClassVar[frozenset[str]] = frozenset()
    needs_gradients: ClassVar[bool] = False
    #: Option names and defaults accepted by :meth:`configure`.
    options: ClassVar[Mapping[str, Any]] = {}
    description: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(
                f"importance {self.name!r} got unknown options {unknown}; valid: {sorted(self.options) or 'none'}",
                unknown,
            )
        self.opts = {**self.options, **options}

    def configure(self, options: Mapping[str, Any]) -> Importance:
        """A new instance of this metric with ``options`` (validated)."""
        return type(self)(**dict(options))

    def weight_scores(self, param: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        """Non-negative score per element of ``param`` (same shape); low scores are pruned first."""
        raise NotImplementedError(f"importance {self.name!r} does not score individual weights")

    def channel_importance(self) -> Any:
        """A torch-pruning ``Importance`` that scores channel groups for structured pruning."""
        raise NotImplementedError(f"importance {self.name!r} does not score channels")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.opts})"
