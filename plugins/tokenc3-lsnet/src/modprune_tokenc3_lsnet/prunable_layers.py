"""Small layers of the prunable block forms that have their own torch-pruning layer pruners.

Kept apart from :mod:`modprune_tokenc3_lsnet.prunable` so that registering their layer pruners
(when modprune builds its plugin manager) imports only torch, not the blocks or ultralytics.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BranchAttention", "BranchPick", "HeadLinear"]


class BranchAttention(nn.Sequential):
    """LSConv's ``small_target_attention`` (pool, 1x1, ReLU, 1x1 -> 2, sigmoid), unchanged except its class.

    Its output holds two branch weights broadcast over the feature channels, not channels: its layer
    pruner prunes the first conv's inputs (the concatenated branches) and never its 2 outputs.
    """


class BranchPick(nn.Module):
    """``a[:, index:index + 1]``: one branch weight of a :class:`BranchAttention` output.

    Its layer pruner does nothing and reports no channels, so a feature channel pruned through the
    product with this weight never reaches the attention (nor, through it, the other branch).
    """

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        """Return the branch weight (B, 1, 1, 1)."""
        return attn[:, self.index : self.index + 1]

    def extra_repr(self) -> str:
        return f"index={self.index}"


class HeadLinear(nn.Linear):
    """``nn.Linear`` whose outputs (and inputs) are ``heads`` equal groups; its layer pruner declares
    them as channel groups, so pruning removes the same number of channels from every head."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, heads: int = 1) -> None:
        super().__init__(in_features, out_features, bias)
        self.heads = heads

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, heads={self.heads}"
