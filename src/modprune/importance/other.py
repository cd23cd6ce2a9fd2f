"""Random, Taylor and BN-scale metrics."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp

from modprune.exceptions import ModpruneError
from modprune.importance.base import CHANNELS, WEIGHTS, Importance, ScoreContext

__all__ = ["RandomImportance", "Taylor", "BNScale"]


class RandomImportance(Importance):
    """Uniform random scores (a baseline), seeded by ``PruneConfig.seed``."""

    name = "random"
    scores = frozenset({WEIGHTS, CHANNELS})
    description = "uniform random scores (baseline)"

    def weight_scores(self, param: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        return torch.rand(param.shape, generator=ctx.generator, device="cpu").to(param.device)

    def channel_importance(self) -> Any:
        return tp.importance.RandomImportance()


class Taylor(Importance):
    """First-order Taylor estimate ``|w * dL/dw|`` (weights) or its channel-group sum.

    Needs gradients: pass ``example_inputs`` (and optionally ``loss_fn``) to :func:`modprune.prune`.
    Without ``loss_fn`` the loss is the mean squared output, a label-free proxy.
    """

    name = "taylor"
    scores = frozenset({WEIGHTS, CHANNELS})
    needs_gradients = True
    description = "|w * grad| from a user batch or loss"

    def weight_scores(self, param: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        if param.grad is None:
            raise ModpruneError(
                "taylor importance needs gradients: pass example_inputs (and a loss_fn) to prune()",
                param,
            )
        return (param.detach() * param.grad.detach()).abs()

    def channel_importance(self) -> Any:
        return tp.importance.GroupTaylorImportance()


class BNScale(Importance):
    """|gamma| of the BatchNorm that follows a channel (network slimming); structured only."""

    name = "bn_scale"
    scores = frozenset({CHANNELS})
    description = "|BatchNorm gamma| per channel (structured only)"

    def channel_importance(self) -> Any:
        return tp.importance.BNScaleImportance()
