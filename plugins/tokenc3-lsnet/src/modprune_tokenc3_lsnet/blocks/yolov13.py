"""YOLOv13 building blocks (iMoonLab/yolov13, arXiv 2506.17733), rebuilt from a written description.

Classes:
    DSConv: depthwise-separable convolution (dw k x k, 1x1, BN, SiLU).
    DSBottleneck: two DSConvs with an optional residual.
    DSC3k: an ultralytics ``C3`` whose inner blocks are DSBottlenecks.
    DSC3k2: a C2f-style block whose inner blocks are DSBottlenecks or DSC3ks.
    DownsampleConv: 2x2 average pool then a 1x1 Conv doubling the channels.
    FullPAD_Tunnel: gated residual across layers, ``x0 + gate * x1``.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import C3, Conv
from ultralytics.nn.modules.conv import autopad

from modprune_tokenc3_lsnet.blocks._common import bn2d

__all__ = ["DSBottleneck", "DSC3k", "DSC3k2", "DSConv", "DownsampleConv", "FullPAD_Tunnel"]


class DSConv(nn.Module):
    """Depthwise-separable convolution ``c1 -> c2``.

    ``SiLU(BN(pw1x1(dw_kxk(x))))``: the depthwise k x k conv (groups = c1, stride ``s``, dilation
    ``d``, no bias) is followed directly by the 1x1 conv; there is no BN between the two.
    """

    def __init__(
        self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, d: int = 1, bias: bool = False
    ) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c1, c1, k, s, autopad(k, p, d), dilation=d, groups=c1, bias=False)
        self.pw = nn.Conv2d(c1, c2, 1, 1, 0, bias=bias)
        self.bn = bn2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``SiLU(BN(pw(dw(x))))``."""
        return self.act(self.bn(self.pw(self.dw(x))))


class DSBottleneck(nn.Module):
    """``DSConv(k1)`` (c1 -> c2 * e) then ``DSConv(k2, dilation d2)`` (-> c2); adds ``x`` when
    ``shortcut`` and ``c1 == c2``."""

    def __init__(
        self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, k1: int = 3, k2: int = 5, d2: int = 1
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = DSConv(c1, c_, k1)
        self.cv2 = DSConv(c_, c2, k2, d=d2)
        self.add = bool(shortcut) and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the bottleneck output (B, c2, H, W)."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class DSC3k(C3):
    """ultralytics ``C3`` (cv1, cv2, cv3, m) whose ``m`` is ``n`` DSBottleneck(c_, c_, e=1, k1, k2, d2),
    ``c_ = int(c2 * e)``. Forward is C3's: ``cv3(cat[m(cv1 x), cv2 x])``."""

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        k1: int = 3,
        k2: int = 5,
        d2: int = 1,
    ) -> None:
        super().__init__(c1, c2, 0, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(DSBottleneck(c_, c_, shortcut, 1.0, k1, k2, d2) for _ in range(n)))


class DSC3k2(nn.Module):
    """C2f-style block ``c1 -> c2`` with ``c = int(c2 * e)``.

    ``cv1`` (1x1, c1 -> 2c) is split into two halves by ``split_sizes``; the second half feeds a
    chain of ``n`` blocks (``DSC3k(c, c, 2, k1, k2)`` when ``dsc3k`` else ``DSBottleneck(c, c, e=1)``)
    and ``cv2`` (1x1, (2 + n) c -> c2) fuses both halves and every block output. ``split_sizes`` is a
    list of plain ints read by ``forward`` (instead of ``chunk(2)``) so a pruner can update it.
    Not used by the TokenC3-LSNet P2 model; provided for YOLOv13 yamls.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        dsc3k: bool = False,
        e: float = 0.5,
        g: int = 1,
        shortcut: bool = True,
        k1: int = 3,
        k2: int = 7,
        d2: int = 1,
    ) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.split_sizes = [self.c, self.c]
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(
            DSC3k(self.c, self.c, 2, shortcut, g, k1=k1, k2=k2, d2=d2)
            if dsc3k
            else DSBottleneck(self.c, self.c, shortcut, 1.0, k1, k2, d2)
            for _ in range(n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv2(cat[y0, y1, m1(y1), m2(m1), ...])``."""
        y = list(torch.split(self.cv1(x), self.split_sizes, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class DownsampleConv(nn.Module):
    """2x2 average pool, then ``channel_adjust`` = 1x1 Conv c -> 2c (identity when ``channel_adjust``
    is False, as the fork's parser arranges at scales l and x)."""

    def __init__(self, in_channels: int, channel_adjust: bool = True) -> None:
        super().__init__()
        self.downsample = nn.AvgPool2d(kernel_size=2)
        self.channel_adjust: nn.Module = Conv(in_channels, in_channels * 2, 1) if channel_adjust else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the downsampled (and channel-doubled) map."""
        return self.channel_adjust(self.downsample(x))


class FullPAD_Tunnel(nn.Module):  # noqa: N801 - the fork's class name, kept for checkpoint compatibility
    """Gated add across layers: ``x[0] + gate * x[1]`` with a learnable scalar ``gate`` (init 0).

    Both operands must have the same shape; the output keeps ``x[0]``'s channel indices.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return ``x[0] + gate * x[1]``."""
        return x[0] + self.gate * x[1]
