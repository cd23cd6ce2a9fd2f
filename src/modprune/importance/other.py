"""Random, Taylor and BN-scale metrics."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp

from modprune.exceptions import ModpruneError
from modprune.importance.base import CHANNELS, WEIGHTS, Importance, ScoreContext

__all__ = ["BNNext", "BNScale", "RandomImportance", "Taylor"]


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


class _BNNextImportance(tp.importance.Importance):
    """Per channel of a group: (sum of |gamma| of its BatchNorms) x (sum of the L1 norms of the next
    layers' input weights that read it). Groups without a BatchNorm fall back to the group L1 norm."""

    def __init__(self) -> None:
        self.fallback = tp.importance.GroupMagnitudeImportance(p=1)

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        items = [(dep, list(idxs), list(group[i].root_idxs)) for i, (dep, idxs) in enumerate(group)]
        items = [(dep, idxs, roots) for dep, idxs, roots in items if idxs and None not in roots]
        if not items:
            return self.fallback(group)
        n = max([len(list(group[0][1]))] + [max(roots) + 1 for _, _, roots in items])
        gamma, reads = torch.zeros(n), torch.zeros(n)
        fn = tp.pruner.function
        for dep, idxs, roots in items:
            layer = dep.layer
            index = torch.tensor(roots)
            if dep.pruning_fn == fn.prune_batchnorm_out_channels and getattr(layer, "weight", None) is not None:
                gamma.scatter_add_(0, index, layer.weight.detach().abs().float().cpu()[idxs])
            elif dep.pruning_fn == fn.prune_conv_in_channels and getattr(layer, "groups", 1) == 1:
                weight = layer.weight.detach().abs().float().cpu()
                per_in = weight.sum(dim=[d for d in range(weight.dim()) if d != (0 if layer.transposed else 1)])
                reads.scatter_add_(0, index, per_in[idxs])
            elif dep.pruning_fn == fn.prune_linear_in_channels:
                reads.scatter_add_(0, index, layer.weight.detach().abs().float().cpu().sum(0)[idxs])
        if not bool(gamma.any()):
            return self.fallback(group)
        if not bool(reads.any()):
            return gamma
        return gamma * reads


class BNNext(Importance):
    """A channel's BatchNorm |gamma| times the L1 norm of the next layers' input weights for it: how
    strongly the normalised channel reaches what follows (structured only). The BatchNorm scale alone
    ignores how much the next layer uses the channel; weight magnitude alone ignores the BatchNorm."""

    name = "bn_l1"
    scores = frozenset({CHANNELS})
    description = "|BatchNorm gamma| x L1 norm of the next layers' input weights (structured only)"

    def channel_importance(self) -> Any:
        return _BNNextImportance()
