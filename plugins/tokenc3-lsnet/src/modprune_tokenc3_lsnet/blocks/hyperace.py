"""YOLOv13's HyperACE (hypergraph-based adaptive correlation enhancement), rebuilt from a description.

Classes:
    AdaHyperedgeGen: soft node-to-hyperedge participation from learned, context-shifted prototypes.
    AdaHGConv: one hypergraph convolution (nodes -> hyperedges -> nodes) with a residual.
    AdaHGComputation: AdaHGConv applied to a feature map viewed as H*W tokens.
    C3AH: a C3-style block whose inner path is an AdaHGComputation.
    FuseModule: fuses three pyramid levels at the middle level's resolution.
    HyperACE: the full module: fuse, 1x1 to three equal parts, two C3AH branches and a DSC3k chain.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from modprune_tokenc3_lsnet.blocks.yolov13 import DSBottleneck, DSC3k

__all__ = ["C3AH", "AdaHGComputation", "AdaHGConv", "AdaHyperedgeGen", "FuseModule", "HyperACE"]

_CONTEXTS = ("mean", "max", "both")


class AdaHyperedgeGen(nn.Module):
    """Participation matrix ``A`` (B, N, E) of N nodes in E adaptive hyperedges.

    Prototypes: ``prototype_base`` (E, D) plus a per-sample offset ``context_net(ctx)`` viewed as
    (E, D) (row ``e * D + d`` of ``context_net``), where ``ctx`` is the node mean, max or both
    concatenated (``context``). Nodes pass ``pre_head_proj`` (D -> D) and are split into
    ``num_heads`` heads; logits are per-head dot products with the prototypes divided by
    ``sqrt(D / num_heads)``, averaged over heads, passed through dropout, and normalised with a
    softmax over the nodes (dim 1), not over the hyperedges.
    """

    def __init__(
        self, node_dim: int, num_hyperedges: int, num_heads: int = 4, dropout: float = 0.1, context: str = "both"
    ) -> None:
        super().__init__()
        if context not in _CONTEXTS:
            raise ValueError(f"context must be one of {_CONTEXTS}, got {context!r}")
        if num_heads < 1 or node_dim % num_heads:
            raise ValueError(f"node_dim {node_dim} must be a positive multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.num_hyperedges = num_hyperedges
        self.context = context
        self.prototype_base = nn.Parameter(torch.empty(num_hyperedges, node_dim))
        nn.init.xavier_uniform_(self.prototype_base)
        ctx_dim = 2 * node_dim if context == "both" else node_dim
        self.context_net = nn.Linear(ctx_dim, num_hyperedges * node_dim)
        self.pre_head_proj = nn.Linear(node_dim, node_dim)
        self.dropout = nn.Dropout(dropout)

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (B, D) or (B, 2D) global context of the nodes ``x`` (B, N, D)."""
        if self.context == "mean":
            return x.mean(dim=1)
        if self.context == "max":
            return x.amax(dim=1)
        return torch.cat((x.mean(dim=1), x.amax(dim=1)), dim=-1)

    def _offsets(self, ctx: torch.Tensor, b: int, e: int, d: int) -> torch.Tensor:
        """Return the (B, E, D) prototype offsets generated from the context."""
        return self.context_net(ctx).view(b, e, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the participation matrix (B, N, E) for nodes ``x`` (B, N, D)."""
        b, n, d = x.shape
        e, h = self.prototype_base.shape[0], self.num_heads
        head_dim = d // h
        prototypes = self.prototype_base.unsqueeze(0) + self._offsets(self._context(x), b, e, d)
        nodes = self.pre_head_proj(x).view(b, n, h, head_dim).transpose(1, 2)  # B, h, N, dh
        protos = prototypes.view(b, e, h, head_dim).permute(0, 2, 3, 1)  # B, h, dh, E
        logits = (nodes @ protos).mean(dim=1) / math.sqrt(head_dim)  # B, N, E
        return torch.softmax(self.dropout(logits), dim=1)


class AdaHGConv(nn.Module):
    """Hypergraph convolution on nodes ``x`` (B, N, D).

    ``He = GELU(Linear(A^T x))`` (hyperedge features), ``x' = GELU(Linear(A He))``; returns
    ``x' + x``, with ``A`` from :class:`AdaHyperedgeGen`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_hyperedges: int = 16,
        num_heads: int = 4,
        dropout: float = 0.1,
        context: str = "both",
    ) -> None:
        super().__init__()
        self.edge_generator = AdaHyperedgeGen(embed_dim, num_hyperedges, num_heads, dropout, context)
        self.edge_proj = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU())
        self.node_proj = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return updated node features (B, N, D)."""
        a = self.edge_generator(x)
        edges = self.edge_proj(a.transpose(1, 2) @ x)
        return self.node_proj(a @ edges) + x


class AdaHGComputation(nn.Module):
    """:class:`AdaHGConv` (``hgnn``) on a feature map (B, C, H, W) viewed as H*W tokens of size C."""

    def __init__(
        self,
        embed_dim: int,
        num_hyperedges: int = 16,
        num_heads: int = 8,
        dropout: float = 0.1,
        context: str = "both",
    ) -> None:
        super().__init__()
        self.hgnn = AdaHGConv(embed_dim, num_hyperedges, num_heads, dropout, context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the map (B, C, H, W) after one hypergraph convolution over its pixels."""
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        return self.hgnn(tokens).transpose(1, 2).reshape(b, c, h, w)


class C3AH(nn.Module):
    """C3-style block ``c1 -> c2`` with hypergraph inner path.

    ``c_ = int(c2 * e)`` must be a multiple of 16 (heads of width 16, ``c_ // 16`` heads);
    output ``cv3(cat[AdaHGComputation(cv1 x), cv2 x])``.
    """

    def __init__(self, c1: int, c2: int, e: float = 1.0, num_hyperedges: int = 8, context: str = "both") -> None:
        super().__init__()
        c_ = int(c2 * e)
        if c_ < 16 or c_ % 16:
            raise ValueError(f"C3AH hidden width {c_} must be a positive multiple of 16")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.m = AdaHGComputation(c_, num_hyperedges, c_ // 16, 0.1, context)
        self.cv3 = Conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv3(cat[m(cv1 x), cv2 x])``."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class FuseModule(nn.Module):
    """Fuse three levels at the middle one's resolution: ``conv_out(cat[avgpool2(x0), x1, up2(x2)])``.

    With ``channel_adjust`` the coarse input ``x2`` carries 2 c_in channels and ``conv_out`` maps
    4 c_in -> c_in; without it (scales l/x) all three carry c_in and ``conv_out`` maps 3 c_in -> c_in.
    """

    def __init__(self, c_in: int, channel_adjust: bool = True) -> None:
        super().__init__()
        self.downsample = nn.AvgPool2d(kernel_size=2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv_out = Conv((4 if channel_adjust else 3) * c_in, c_in, 1)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return the fused map (B, c_in, H1, W1) for ``x = [x0, x1, x2]``."""
        return self.conv_out(torch.cat((self.downsample(x[0]), x[1], self.upsample(x[2])), 1))


class HyperACE(nn.Module):
    """HyperACE ``c1 -> c2`` on three pyramid levels.

    ``c = int(c2 * e1)``. ``y = cv1(fuse(x))`` (c1 -> 3c) is split by ``split_sizes`` (three plain
    ints, initially ``[c, c, c]``) into y0, y1, y2. ``branch1`` and ``branch2`` (C3AH with ``e2`` and
    ``num_hyperedges``) both read y1; ``m`` is a chain of ``n`` DSC3k(c, c, 2, k1=3, k2=7) (or
    DSBottleneck when ``dsc3k`` is False) starting from y2. ``cv2`` maps
    ``cat[y0, branch1(y1), y2, m1, ..., mn, branch2(y1)]`` ((4 + n) c) to c2.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        num_hyperedges: int = 8,
        dsc3k: bool = True,
        shortcut: bool = False,
        e1: float = 0.5,
        e2: float = 1,
        context: str = "both",
        channel_adjust: bool = True,
    ) -> None:
        super().__init__()
        self.c = c = int(c2 * e1)
        self.split_sizes = [c, c, c]
        self.cv1 = Conv(c1, 3 * c, 1, 1)
        self.cv2 = Conv((4 + n) * c, c2, 1)
        self.m = nn.ModuleList(
            DSC3k(c, c, 2, shortcut, k1=3, k2=7) if dsc3k else DSBottleneck(c, c, shortcut=shortcut)
            for _ in range(n)
        )
        self.fuse = FuseModule(c1, channel_adjust)
        self.branch1 = C3AH(c, c, e2, num_hyperedges, context)
        self.branch2 = C3AH(c, c, e2, num_hyperedges, context)

    def _pieces(self, fused: torch.Tensor) -> list[torch.Tensor]:
        """Return ``cv1(fused)`` split into y0, y1, y2 (``split_sizes``)."""
        return list(torch.split(self.cv1(fused), self.split_sizes, 1))

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return the enhanced map (B, c2, H, W) at the resolution of ``x[1]``."""
        y = self._pieces(self.fuse(x))
        out1 = self.branch1(y[1])
        out2 = self.branch2(y[1])
        y.extend(m(y[-1]) for m in self.m)
        y[1] = out1
        y.append(out2)
        return self.cv2(torch.cat(y, 1))
