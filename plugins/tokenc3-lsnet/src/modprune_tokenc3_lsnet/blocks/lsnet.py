"""LSNet-inspired blocks of the TokenC3-LSNet detector ("See Large, Focus Small").

These are the user's fork's own designs (not LSNet's LKP/SKA), rebuilt from a written description.
Attribute names reproduce the fork's state_dict keys so that its checkpoints load with
``strict=True``.

Classes:
    LSConv: large/small kernel convolution with background suppression and small-target
        enhancement, fused by a learned two-way branch attention.
    DynamicLocalMixer: the fork's "DLLM": a per-sample, per-channel dynamic depthwise kernel
        plus fixed 3x3/5x5 depthwise context, fused and refined.
    LSGhostBottleneck: 1x1 -> dense k x k conv, refined by a DLLM gated with a saliency mask.
    TokenC3: a C3-style block whose hidden channels are split between an LSGhostBottleneck chain
        and an ultralytics Bottleneck chain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Bottleneck, Conv

from modprune_tokenc3_lsnet.blocks._common import bn2d, conv2d, depthwise

__all__ = ["DynamicLocalMixer", "LSConv", "LSGhostBottleneck", "TokenC3", "split_ls_reg"]


def _common_groups(groups: int, *channels: int) -> int:
    """Return ``groups`` if it divides every channel count, else 1."""
    if groups < 1 or any(c % groups for c in channels):
        return 1
    return groups


class LSConv(nn.Module):
    """Large/small kernel convolution ``c1 -> c2`` ("see large, focus small").

    Computes, with ``cL = c2 // 2`` and ``cS = c2 - cL``:

    - ``L = SiLU(BN(conv_kxk_large(x)))`` (c1 -> cL) and ``S = SiLU(BN(conv_kxk_small(x)))`` (c1 -> cS);
    - background suppression ``Ls = L * (1 - 0.3 * bg)``, ``bg`` a squeeze-excite gate on ``L``
      (global pool, 1x1 to ``max(1, cL // 16)``, ReLU, 1x1 back, sigmoid);
    - small-target enhancement ``Sb = S * (1 + 0.5 * en)``,
      ``en = sigmoid(BN(1x1(ReLU(BN(dw3x3(S))))))``;
    - branch attention ``a = sigmoid(1x1(ReLU(1x1(pool(cat[Ls, Sb])))))`` with 2 outputs;
    - output ``Conv1x1(cat[Ls * a0 + 0.2 L, 1.8 a1 Sb + 0.4 S])`` (conv, BN, SiLU).

    ``fusion_weight`` is a 2-element parameter the fork declares but never uses in the forward
    pass; it is kept so that checkpoints and parameter counts match.
    """

    def __init__(self, c1: int, c2: int, large_kernel: int = 7, small_kernel: int = 3, groups: int = 1) -> None:
        super().__init__()
        cl = c2 // 2
        cs = c2 - cl
        g = _common_groups(groups, c1, cl, cs)
        self.fusion_weight = nn.Parameter(torch.tensor([0.4, 0.6]))
        self.large_branch = nn.Sequential(conv2d(c1, cl, large_kernel, groups=g), bn2d(cl), nn.SiLU())
        self.small_branch = nn.Sequential(conv2d(c1, cs, small_kernel, groups=g), bn2d(cs), nn.SiLU())
        hidden = max(4, c2 // 8)
        self.small_target_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            conv2d(cl + cs, hidden, bias=True),
            nn.ReLU(),
            conv2d(hidden, 2, bias=True),
            nn.Sigmoid(),
        )
        self.small_target_enhance = nn.Sequential(
            depthwise(cs, 3), bn2d(cs), nn.ReLU(), conv2d(cs, cs), bn2d(cs), nn.Sigmoid()
        )
        squeeze = max(1, cl // 16)
        self.background_suppress = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            conv2d(cl, squeeze, bias=True),
            nn.ReLU(),
            conv2d(squeeze, cl, bias=True),
            nn.Sigmoid(),
        )
        self.fusion_conv = Conv(cl + cs, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the fused large/small branch features (B, c2, H, W)."""
        large = self.large_branch(x)
        small = self.small_branch(x)
        large_s = large * (1 - 0.3 * self.background_suppress(large))
        small_b = small * (1 + 0.5 * self.small_target_enhance(small))
        attn = self.small_target_attention(torch.cat((large_s, small_b), 1))
        a0, a1 = attn[:, 0:1], attn[:, 1:2]
        fused = torch.cat((large_s * a0 + 0.2 * large, 1.8 * a1 * small_b + 0.4 * small), 1)
        return self.fusion_conv(fused)


class DynamicLocalMixer(nn.Module):
    """Dynamic local mixer (the fork's "DLLM") on ``dim`` channels.

    - A kernel generator (global pool, 1x1 to ``max(dim // reduction, min_dim)``, ReLU, 1x1 to
      ``dim * k * k``, sigmoid; no biases) gives one k x k kernel per sample and channel, laid out
      channel-major (output channel ``c * k * k + i * k + j``).
    - ``dyn``: the input convolved depthwise with those per-sample kernels, computed as one grouped
      convolution over ``batch * dim`` groups.
    - ``f = 1x1(cat[dyn, dw3x3(x), dw5x5(x)])`` (3 * dim -> dim, no bias).
    - Output ``SiLU(BN(f + BN(dw3x3(SiLU(BN(1x1(f)))))))``.
    """

    def __init__(self, dim: int, kernel_size: int = 3, reduction: int = 4, min_dim: int = 8) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        hidden = max(dim // reduction, min_dim)
        self.weight_gen = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            conv2d(dim, hidden),
            nn.ReLU(),
            conv2d(hidden, dim * kernel_size * kernel_size),
            nn.Sigmoid(),
        )
        self.local_context = nn.ModuleList((depthwise(dim, 3), depthwise(dim, 5)))
        self.fusion = conv2d(3 * dim, dim)
        self.norm = bn2d(dim)
        self.small_target_enhance = nn.Sequential(conv2d(dim, dim), bn2d(dim), nn.SiLU(), depthwise(dim, 3), bn2d(dim))
        self.act = nn.SiLU()

    def dynamic_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve each sample's channels with that sample's generated k x k kernels."""
        b, c, h, w = x.shape
        k = self.kernel_size
        kernels = self.weight_gen(x).reshape(b * c, 1, k, k)
        out = F.conv2d(x.reshape(1, b * c, h, w), kernels, padding=k // 2, groups=b * c)
        return out.reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the mixed features (same shape as ``x``)."""
        parts = [self.dynamic_conv(x), *(conv(x) for conv in self.local_context)]
        f = self.fusion(torch.cat(parts, 1))
        return self.act(self.norm(f + self.small_target_enhance(f)))


class LSGhostBottleneck(nn.Module):
    """Bottleneck ``c1 -> c2`` with a dynamic-mixer refinement (no ghost convolution despite the name).

    ``p = Conv_kxk(Conv_1x1(x))`` (dense k x k, k = ``large_kernel``),
    ``m = sigmoid(BN(1x1(ReLU(BN(dw3x3(p))))))``, ``d = DLLM(p)``;
    output ``p + 0.4 d m + 0.3 p m``, plus ``x`` when ``shortcut`` and ``c1 == c2``.
    ``small_kernel`` and ``e`` are accepted for signature compatibility and ignored. With
    ``use_dllm=False`` the ``0.4 d m`` term is dropped and no mixer is built.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        large_kernel: int = 5,
        small_kernel: int = 3,
        shortcut: bool = True,
        e: float = 0.5,
        use_dllm: bool = True,
    ) -> None:
        super().__init__()
        del small_kernel, e  # accepted, unused (as in the fork)
        self.cv1 = Conv(c1, c2, 1)
        self.cv2 = Conv(c2, c2, large_kernel)
        self.dllm = DynamicLocalMixer(c2, 3, 4) if use_dllm else None
        self.single_class_enhance = nn.Sequential(
            depthwise(c2, 3), bn2d(c2), nn.ReLU(), conv2d(c2, c2), bn2d(c2), nn.Sigmoid()
        )
        self.add = bool(shortcut) and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the refined features (B, c2, H, W)."""
        p = self.cv2(self.cv1(x))
        mask = self.single_class_enhance(p)
        out = p + 0.3 * p * mask
        if self.dllm is not None:
            out = out + 0.4 * self.dllm(p) * mask
        return x + out if self.add else out


def split_ls_reg(hidden: int, groups: int, ls_ratio: float = 0.6) -> tuple[int, int]:
    """Split ``hidden`` channels into (ls, reg) as the fork does.

    ``ls = int(ls_ratio * hidden)``; with ``groups > 1`` ls rounds down to a multiple of groups and,
    if the remaining ``reg`` is then not a multiple of groups, reg rounds down and the remainder goes
    back to ls.
    """
    ls = int(ls_ratio * hidden)
    if groups > 1:
        ls = ls // groups * groups
    reg = hidden - ls
    if groups > 1 and reg % groups:
        reg = reg // groups * groups
        ls = hidden - reg
    if ls < 1 or reg < 1:
        raise ValueError(f"TokenC3 hidden width {hidden} is too small to split (ls={ls}, reg={reg})")
    return ls, reg


class TokenC3(nn.Module):
    """C3-style block ``c1 -> c2`` mixing LSNet-style and regular bottleneck chains.

    With ``c_ = int(c2 * e)``: ``y = LSConv(x)`` (c1 -> c_, groups ``g``) is split into
    ``ls_channels`` and ``reg_channels`` (see :func:`split_ls_reg`). The first part passes ``n``
    :class:`LSGhostBottleneck` (``ls_bottlenecks``), the second ``n`` ultralytics ``Bottleneck``
    with kernels 1x1 then 3x3 and groups ``g`` (``regular_bottlenecks``). Their concatenation goes
    through ``cross_interaction`` (per-channel scale: depthwise 1x1 without bias, BN, SiLU) and,
    concatenated with ``cv2(x)``, through ``cv3`` (2 c_ -> c2).

    ``g`` arrives from the yaml as a number and is ``max(1, int(g))``, so the yaml's ``0.25`` gives 1.
    ``ls_channels`` and ``reg_channels`` are plain ints read by ``forward``; a structured pruner
    that removes channels of ``cv1``'s output must update them.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: float = 1,
        e: float = 0.5,
        large_kernel: int = 7,
        small_kernel: int = 3,
        use_dllm: bool = True,
        ls_ratio: float = 0.6,
    ) -> None:
        super().__init__()
        groups = max(1, int(g))
        c_ = int(c2 * e)
        self.ls_channels, self.reg_channels = split_ls_reg(c_, groups, ls_ratio)
        self.cv1 = LSConv(c1, c_, large_kernel, small_kernel, groups)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        ls, reg = self.ls_channels, self.reg_channels
        self.ls_bottlenecks = nn.Sequential(
            *(LSGhostBottleneck(ls, ls, large_kernel, small_kernel, shortcut, 1.0, use_dllm) for _ in range(n))
        )
        self.regular_bottlenecks = nn.Sequential(
            *(Bottleneck(reg, reg, shortcut, groups, k=(1, 3), e=1.0) for _ in range(n))
        )
        self.cross_interaction = nn.Sequential(depthwise(c_, 1), bn2d(c_), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block output (B, c2, H, W)."""
        ls, reg = torch.split(self.cv1(x), [self.ls_channels, self.reg_channels], 1)
        mixed = torch.cat((self.ls_bottlenecks(ls), self.regular_bottlenecks(reg)), 1)
        return self.cv3(torch.cat((self.cross_interaction(mixed), self.cv2(x)), 1))
