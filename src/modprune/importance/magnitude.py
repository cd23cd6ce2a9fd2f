"""Magnitude metrics: L1, L2 and their weighted mix."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch_pruning as tp

from modprune.exceptions import ConfigError
from modprune.importance.base import CHANNELS, WEIGHTS, Importance, ScoreContext

__all__ = ["L1", "L2", "L1L2"]

_EPS = 1e-12


class L1(Importance):
    """|w| per weight; L1 norm of each channel group's weights."""

    name = "l1"
    scores = frozenset({WEIGHTS, CHANNELS})
    description = "absolute value (weights) / L1 norm (channels)"

    def weight_scores(self, param: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        return param.detach().abs()

    def channel_importance(self) -> Any:
        return tp.importance.GroupMagnitudeImportance(p=1)


class L2(Importance):
    """w^2 per weight; L2 norm of each channel group's weights."""

    name = "l2"
    scores = frozenset({WEIGHTS, CHANNELS})
    description = "squared value (weights) / L2 norm (channels)"

    def weight_scores(self, param: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        return param.detach().pow(2)

    def channel_importance(self) -> Any:
        return tp.importance.GroupMagnitudeImportance(p=2)


class _MixedGroupImportance(tp.importance.Importance):
    """``alpha * L1 + (1 - alpha) * L2`` over channel groups, each mean-normalised."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.l1 = tp.importance.GroupMagnitudeImportance(p=1, normalizer="mean")
        self.l2 = tp.importance.GroupMagnitudeImportance(p=2, normalizer="mean")

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor:
        a, b = self.l1(group), self.l2(group)
        if a is None or b is None:
            return a if b is None else b
        return self.alpha * a + (1 - self.alpha) * b


class L1L2(Importance):
    """Weighted mix ``alpha * L1 + (1 - alpha) * L2`` (default 0.7 / 0.3, the seed design).

    Each term is divided by its mean over the layer first, so both terms are on the same scale and
    ``alpha`` really weighs them (raw ``w^2`` is orders of magnitude smaller than ``|w|``).
    """

    name = "l1l2"
    scores = frozenset({WEIGHTS, CHANNELS})
    options: ClassVar[dict[str, Any]] = {"alpha": 0.7}
    description = "alpha * |w| + (1 - alpha) * w^2, each normalised per layer"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        alpha = self.opts["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ConfigError(f"l1l2 option alpha must be in [0, 1], got {alpha!r}", alpha)
        self.alpha = float(alpha)

    def weight_scores(self, param: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        w = param.detach().abs()
        l1 = w / (w.mean() + _EPS)
        sq = w.pow(2)
        l2 = sq / (sq.mean() + _EPS)
        return self.alpha * l1 + (1 - self.alpha) * l2

    def channel_importance(self) -> Any:
        return _MixedGroupImportance(self.alpha)
