"""torch-pruning layer pruners for the prunable TokenC3-LSNet layers (see :mod:`modprune_tokenc3_lsnet.prunable`).

* :class:`BranchAttentionPruner` (for :class:`~modprune_tokenc3_lsnet.prunable.BranchAttention`): input
  channels are the LSConv's concatenated branches and are pruned from the first 1x1 conv; the 2 outputs
  are branch weights broadcast over every feature channel, so pruning a feature channel never removes one
  (``prune_out_channels`` does nothing, and the module reports no output channels, so it is never a root).
* :class:`BranchPickPruner` (for :class:`~modprune_tokenc3_lsnet.prunable.BranchPick`): does nothing and
  reports no channels. A feature channel pruned through its product with a branch weight reaches the
  pick and stops there: it must neither reach the attention's outputs nor, through the other pick,
  the other branch.
* :class:`HeadLinearPruner` (for :class:`~modprune_tokenc3_lsnet.prunable.HeadLinear`): torch-pruning's
  linear pruner, plus the heads declared as channel groups (inputs and outputs), so torch-pruning removes
  the same relative channels from every head (heads keep equal widths). It refuses index sets that would
  leave heads unequal.
"""

from __future__ import annotations

from typing import Sequence

import torch_pruning as tp
from torch import nn

from modprune_tokenc3_lsnet.prunable_layers import BranchAttention, BranchPick, HeadLinear

__all__ = ["BranchAttentionPruner", "BranchPickPruner", "HeadLinearPruner", "layer_pruners"]


class BranchAttentionPruner(tp.pruner.function.BasePruningFunc):
    """Prunes a :class:`BranchAttention`'s inputs; its 2 outputs are not channels."""

    TARGET_MODULES = (BranchAttention,)

    @staticmethod
    def _first_conv(layer: nn.Module) -> nn.Conv2d:
        conv = next((m for m in layer if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise TypeError(f"{type(layer).__name__} holds no convolution")
        return conv

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Nothing: the attention's two outputs scale whole branches, not channels."""
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        conv = self._first_conv(layer)
        keep = sorted(set(range(conv.in_channels)) - set(int(i) for i in idxs))
        conv.in_channels = len(keep)
        conv.weight = self._prune_parameter_and_grad(conv.weight, keep, 1)
        return layer

    def get_out_channels(self, layer: nn.Module) -> None:
        """None: no output channels to prune (torch-pruning then never uses it as a group root)."""
        return None

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(self._first_conv(layer).in_channels)


class BranchPickPruner(tp.pruner.function.BasePruningFunc):
    """A dependency stop for :class:`BranchPick`: nothing to prune on either side."""

    TARGET_MODULES = (BranchPick,)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return layer

    def get_out_channels(self, layer: nn.Module) -> None:
        return None

    def get_in_channels(self, layer: nn.Module) -> None:
        return None


class HeadLinearPruner(tp.pruner.function.LinearPruner):
    """torch-pruning's linear pruner with heads as channel groups."""

    TARGET_MODULES = (HeadLinear,)

    @staticmethod
    def _check_heads(layer: HeadLinear, size: int, idxs: Sequence[int]) -> None:
        heads = max(1, int(layer.heads))
        if size % heads:
            raise ValueError(f"{size} channels do not split into {heads} equal heads")
        width = size // heads
        per_head = [0] * heads
        for i in idxs:
            per_head[int(i) // width] += 1
        if len(set(per_head)) > 1:
            raise ValueError(
                f"pruning {len(idxs)} channels of a {heads}-head layer would leave unequal heads "
                f"(removed per head: {per_head})"
            )

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        self._check_heads(layer, layer.out_features, idxs)
        return super().prune_out_channels(layer, idxs)

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        self._check_heads(layer, layer.in_features, idxs)
        return super().prune_in_channels(layer, idxs)

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        return max(1, int(layer.heads))

    def get_in_channel_groups(self, layer: nn.Module) -> int:
        return max(1, int(layer.heads))


def layer_pruners() -> list[tuple[type, tp.pruner.function.BasePruningFunc]]:
    """``(module type, layer pruner)`` pairs for ``modprune_register_layer_pruners``."""
    return [
        (BranchAttention, BranchAttentionPruner()),
        (BranchPick, BranchPickPruner()),
        (HeadLinear, HeadLinearPruner()),
    ]
