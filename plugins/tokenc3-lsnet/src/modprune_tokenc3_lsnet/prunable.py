"""Prunable equivalents of the TokenC3-LSNet blocks, for structured (channel) pruning.

torch-pruning 1.6.1 traces a model's autograd graph and treats every operation it does not know as
element-wise. Several blocks of this model compute things that tracing misreads; the classes here
compute exactly the same outputs (same parameters, re-laid out) in a form it reads correctly:

* :class:`PrunableTokenC3` / :class:`SplitLSConv`: TokenC3 ``torch.split``-s its LSConv output into
  the LS and regular chains; with a residual the pieces have several consumers, which breaks
  torch-pruning's split handling. The LSConv's ``fusion_conv`` becomes two convolutions
  (``fusion_ls``, ``fusion_reg``) and the LSConv returns both pieces. The per-channel
  ``cross_interaction`` (depthwise 1x1, BN, SiLU) over ``cat[ls, reg]`` becomes ``cross_ls`` and
  ``cross_reg``: one depthwise layer over both chains would put them into one pruning group, where
  torch-pruning's group importance (summed over the layers a channel touches) always favours the
  deeper LS chain and prunes only the regular one.
* :class:`PrunableLSConv` (:class:`BranchAttention`, :class:`BranchPick`): LSConv's two-way branch
  attention ``a`` is used as ``a[:, 0:1]`` and ``a[:, 1:2]``, broadcast over the feature channels.
  torch-pruning treats the slices and the products as channel-wise, so it would tie feature channel
  ``i`` to attention output ``i`` (pruning the branches breaks the 2 outputs) and, through the other
  slice, large-branch channel 1 to small-branch channel 0 (breaking grouped branches). Here the
  attention (same children and state_dict keys, an ``nn.Sequential`` subclass) and the two picks
  are layers of their own whose layer pruners (:mod:`modprune_tokenc3_lsnet.layer_pruners`) prune
  the attention's inputs only and stop the dependency at the picks.
* :class:`PrunableDynamicLocalMixer`: the DLLM's per-sample dynamic depthwise convolution reshapes a
  ``dim * k * k`` generator output into kernels. Here the generator's last conv is held as ``k * k``
  convolutions (``kernel_taps``, one per kernel position, ``dim`` outputs each) and the dynamic
  convolution is the sum of ``sigmoid(tap_t) * shift_t(x)``: channel ``c`` of every tap is tied to
  channel ``c`` of the input, i.e. the generator is pruned in whole ``k * k`` blocks.
* :class:`PrunableAdaHyperedgeGen`: ``context_net`` (``ctx -> E * D``, viewed as (E, D)) becomes
  ``E`` linear layers ``ctx -> D`` (``context_nets``) stacked on a new axis, the context is
  concatenated on dim 1 (torch-pruning maps offsets only for dim 1), and ``pre_head_proj`` is a
  :class:`HeadLinear`, whose layer pruner declares the heads as channel groups so that every head
  loses the same number of channels.
* :class:`PrunableHyperACE` / :class:`PrunableDSC3k2`: their ``cv1`` output is split (HyperACE's
  ``y1`` feeds both C3AH branches, ``y2`` the DSC3k chain and the concat); ``cv1`` becomes one
  convolution per piece (``cv1_parts``).

Each prunable class derives from the block it replaces (so modprune's detectors put it in the same
category) and is made by :func:`make_prunable` in place (the module object is kept, its class swapped
and a few children replaced). :func:`restore_blocks` converts everything back to the plugin's
original classes, with the split sizes and other stored ints following the pruned widths, so a
pruned model holds only the ordinary blocks. Both conversions are exact (weights are copied, sliced
or concatenated, never recomputed). The import paths here are stable: a model saved between
pruning steps pickles them.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from modprune.surgery import (
    conv_of,
    merge_conv_blocks,
    merge_per_channel,
    new_parameter as _param,
    slice_per_channel,
    split_conv_block,
)

from modprune_tokenc3_lsnet.blocks.hyperace import AdaHyperedgeGen, HyperACE
from modprune_tokenc3_lsnet.blocks.lsnet import DynamicLocalMixer, LSConv, TokenC3
from modprune_tokenc3_lsnet.blocks.yolov13 import DSC3k2
from modprune_tokenc3_lsnet.prunable_layers import BranchAttention, BranchPick, HeadLinear

__all__ = [
    "PRUNABLE_CLASSES",
    "BranchAttention",
    "BranchPick",
    "HeadLinear",
    "PrunableAdaHyperedgeGen",
    "PrunableDSC3k2",
    "PrunableDynamicLocalMixer",
    "PrunableHyperACE",
    "PrunableLSConv",
    "PrunableTokenC3",
    "SplitLSConv",
    "make_prunable",
    "restore_blocks",
]

# --- helpers ----------------------------------------------------------------------------------


def _out(module: nn.Module) -> int:
    conv = conv_of(module)
    if conv is None:
        raise TypeError(f"expected an nn.Conv2d or a block holding one as 'conv', got {type(module).__name__}")
    return int(conv.out_channels)


def _path_width(blocks: nn.Module, width: int) -> int:
    """Output channels of a chain of bottlenecks fed ``width`` channels: a block with a shortcut (or one
    removed by depth pruning) keeps its input width, one without gives its last convolution's."""
    for block in blocks.children() if isinstance(blocks, nn.Sequential) else (blocks,):
        if isinstance(block, nn.Identity) or getattr(block, "add", False):
            continue
        width = _out(block.cv2)
    return width


def _replace_children(parent: nn.Module, old: tuple[str, ...], new: dict[str, nn.Module]) -> None:
    """Replace the children named ``old`` by ``new`` at the position of the first of them (so that
    state_dict keys keep their order through a conversion and back)."""
    items = list(parent._modules.items())
    position = next(i for i, (name, _) in enumerate(items) if name in old)
    kept = [(n, m) for n, m in items if n not in old]
    kept[position:position] = list(new.items())
    parent._modules.clear()
    parent._modules.update(kept)


# --- LSConv / TokenC3 -------------------------------------------------------------------------


class PrunableLSConv(LSConv):
    """LSConv whose branch attention is a :class:`BranchAttention` read through two :class:`BranchPick`
    (``branch_picks``)."""

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated, attention-weighted branches (the input of the output conv)."""
        large = self.large_branch(x)
        small = self.small_branch(x)
        large_s = large * (1 - 0.3 * self.background_suppress(large))
        small_b = small * (1 + 0.5 * self.small_target_enhance(small))
        attn = self.small_target_attention(torch.cat((large_s, small_b), 1))
        a0, a1 = self.branch_picks[0](attn), self.branch_picks[1](attn)
        return torch.cat((large_s * a0 + 0.2 * large, 1.8 * a1 * small_b + 0.4 * small), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the fused large/small branch features (B, c2, H, W)."""
        return self.fusion_conv(self.fused(x))


class SplitLSConv(PrunableLSConv):
    """PrunableLSConv whose output conv is held as two convs, ``fusion_ls`` and ``fusion_reg``; returns
    the tuple ``(ls, reg)`` that TokenC3 would get from ``torch.split`` of LSConv's output."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Return the LS part and the regular part of the fused features."""
        fused = self.fused(x)
        return self.fusion_ls(fused), self.fusion_reg(fused)


class PrunableTokenC3(TokenC3):
    """TokenC3 whose ``cv1`` is a :class:`SplitLSConv` (no ``torch.split``) and whose per-channel
    ``cross_interaction`` is held as ``cross_ls`` and ``cross_reg`` (one per chain)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block output (B, c2, H, W)."""
        ls, reg = self.cv1(x)
        mixed = torch.cat((self.cross_ls(self.ls_bottlenecks(ls)), self.cross_reg(self.regular_bottlenecks(reg))), 1)
        return self.cv3(torch.cat((mixed, self.cv2(x)), 1))


# --- DLLM -------------------------------------------------------------------------------------


class PrunableDynamicLocalMixer(DynamicLocalMixer):
    """DLLM with the kernel generator's last conv held as ``k * k`` convs (``kernel_taps``).

    ``weight_gen`` keeps the pool, first conv and ReLU; tap ``t = i * k + j`` holds rows
    ``c * k * k + t`` of the original last conv, and ``kernel_act`` is the generator's final sigmoid.
    The dynamic convolution is ``sum_t sigmoid(tap_t(g)) * pad(x)[..., i:i+H, j:j+W]``, the same
    cross-correlation as the original grouped convolution.
    """

    def dynamic_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve each sample's channels with that sample's generated k x k kernels."""
        k = self.kernel_size
        h, w = x.shape[-2:]
        g = self.weight_gen(x)
        padded = F.pad(x, (k // 2, k // 2, k // 2, k // 2))
        out: torch.Tensor | None = None
        for t, tap in enumerate(self.kernel_taps):
            i, j = divmod(t, k)
            term = self.kernel_act(tap(g)) * padded[:, :, i : i + h, j : j + w]
            out = term if out is None else out + term
        assert out is not None
        return out


# --- hypergraph -------------------------------------------------------------------------------


class PrunableAdaHyperedgeGen(AdaHyperedgeGen):
    """AdaHyperedgeGen with ``context_net`` as ``E`` linears ``ctx -> D`` (``context_nets``; net ``e``
    holds rows ``e * D .. e * D + D - 1``) and ``pre_head_proj`` a :class:`HeadLinear`."""

    def _offsets(self, ctx: torch.Tensor, b: int, e: int, d: int) -> torch.Tensor:
        """Return the (B, E, D) offsets, one hyperedge's linear at a time."""
        return torch.stack([net(ctx) for net in self.context_nets], dim=1)


# --- split first convs ------------------------------------------------------------------------


class PrunableHyperACE(HyperACE):
    """HyperACE whose ``cv1`` is three convs (``cv1_parts``: y0, y1, y2)."""

    def _pieces(self, fused: torch.Tensor) -> list[torch.Tensor]:
        """Return y0, y1, y2, one conv each."""
        return [cv(fused) for cv in self.cv1_parts]


class PrunableDSC3k2(DSC3k2):
    """DSC3k2 whose ``cv1`` is two convs (``cv1_parts``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cv2(cat[y0, y1, m1(y1), m2(m1), ...])``."""
        y = [cv(x) for cv in self.cv1_parts]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


#: Every class this module may leave in a model (for weights-only loading of a model saved mid-pruning).
PRUNABLE_CLASSES: tuple[type, ...] = (
    BranchAttention,
    BranchPick,
    HeadLinear,
    PrunableAdaHyperedgeGen,
    PrunableDSC3k2,
    PrunableDynamicLocalMixer,
    PrunableHyperACE,
    PrunableLSConv,
    PrunableTokenC3,
    SplitLSConv,
)


# --- conversions ------------------------------------------------------------------------------


def _swap(module: nn.Module, cls: type) -> None:
    module.__class__ = cls


def _mode_like(new: nn.Module, ref: nn.Module, recurse: bool = True) -> nn.Module:
    """Give a newly built module (and, with ``recurse``, its children) the train/eval flag of ``ref``."""
    for m in new.modules() if recurse else (new,):
        m.training = ref.training
    return new


def _prepare_lsconv(lsconv: LSConv) -> None:
    attention = BranchAttention(*lsconv.small_target_attention)
    attention.training = lsconv.small_target_attention.training
    lsconv.small_target_attention = attention
    lsconv.branch_picks = _mode_like(nn.ModuleList([BranchPick(0), BranchPick(1)]), lsconv)
    _swap(lsconv, PrunableLSConv)


def _restore_lsconv(lsconv: PrunableLSConv) -> None:
    plain = nn.Sequential(*lsconv.small_target_attention)
    plain.training = lsconv.small_target_attention.training
    lsconv.small_target_attention = plain
    del lsconv.branch_picks
    _swap(lsconv, LSConv)


def _prepare_tokenc3(block: TokenC3) -> None:
    lsconv = block.cv1
    ls, reg = block.ls_channels, block.reg_channels
    if _out(lsconv.fusion_conv) != ls + reg:
        raise ValueError(f"TokenC3 split sizes {ls}+{reg} do not match its LSConv's {_out(lsconv.fusion_conv)} outputs")
    # cross_interaction runs on the bottlenecks' outputs: without shortcuts, pruning lets them differ from
    # the split sizes (their inputs), so the cross split follows the paths' output widths.
    ls_out, reg_out = _path_width(block.ls_bottlenecks, ls), _path_width(block.regular_bottlenecks, reg)
    if _out(block.cross_interaction[0]) != ls_out + reg_out:
        raise ValueError(f"TokenC3 cross interaction has {_out(block.cross_interaction[0])} channels, its paths "
                         f"give {ls_out}+{reg_out}")
    fusion_ls, fusion_reg = split_conv_block(lsconv.fusion_conv, (ls, reg))
    cross_ls = slice_per_channel(block.cross_interaction, slice(0, ls_out))
    cross_reg = slice_per_channel(block.cross_interaction, slice(ls_out, ls_out + reg_out))
    _replace_children(lsconv, ("fusion_conv",), {"fusion_ls": fusion_ls, "fusion_reg": fusion_reg})
    _replace_children(block, ("cross_interaction",), {"cross_ls": cross_ls, "cross_reg": cross_reg})
    _prepare_lsconv(lsconv)
    _swap(lsconv, SplitLSConv)
    _swap(block, PrunableTokenC3)


def _restore_tokenc3(block: PrunableTokenC3) -> None:
    lsconv = block.cv1
    block.ls_channels, block.reg_channels = _out(lsconv.fusion_ls), _out(lsconv.fusion_reg)
    fusion = merge_conv_blocks([lsconv.fusion_ls, lsconv.fusion_reg])
    cross = merge_per_channel([block.cross_ls, block.cross_reg])
    _replace_children(lsconv, ("fusion_ls", "fusion_reg"), {"fusion_conv": fusion})
    _replace_children(block, ("cross_ls", "cross_reg"), {"cross_interaction": cross})
    _restore_lsconv(lsconv)
    _swap(block, TokenC3)


def _prepare_dllm(mixer: DynamicLocalMixer) -> None:
    gen = mixer.weight_gen
    last = gen[3]
    k = mixer.kernel_size
    dim = last.out_channels // (k * k)
    if last.out_channels != dim * k * k or last.groups != 1:
        raise ValueError(f"DLLM kernel generator has {last.out_channels} outputs, not a multiple of {k * k}")
    rows = last.weight.detach().view(dim, k * k, *last.weight.shape[1:])
    taps = nn.ModuleList()
    for t in range(k * k):
        tap = copy.deepcopy(last)
        tap.weight = _param(rows[:, t], last.weight)
        if last.bias is not None:
            tap.bias = _param(last.bias.detach().view(dim, k * k)[:, t], last.bias)
        tap.out_channels = dim
        taps.append(tap)
    taps.training = last.training
    new_gen = nn.Sequential(*list(gen)[:3])
    new_gen.training = gen.training
    _replace_children(mixer, ("weight_gen",), {"weight_gen": new_gen, "kernel_taps": taps, "kernel_act": gen[4]})
    _swap(mixer, PrunableDynamicLocalMixer)


def _restore_dllm(mixer: PrunableDynamicLocalMixer) -> None:
    taps = list(mixer.kernel_taps)
    first = taps[0]
    dim = first.out_channels
    k2 = len(taps)
    last = copy.deepcopy(first)
    weight = torch.stack([t.weight.detach() for t in taps], 1)  # dim, k*k, in, 1, 1
    last.weight = _param(weight.reshape(dim * k2, *first.weight.shape[1:]), first.weight)
    if first.bias is not None:
        last.bias = _param(torch.stack([t.bias.detach() for t in taps], 1).reshape(-1), first.bias)
    last.out_channels = dim * k2
    gen = nn.Sequential(*mixer.weight_gen, last, mixer.kernel_act)
    gen.training = mixer.weight_gen.training
    _replace_children(mixer, ("weight_gen", "kernel_taps", "kernel_act"), {"weight_gen": gen})
    _swap(mixer, DynamicLocalMixer)


def _prepare_hyperedge(gen: AdaHyperedgeGen) -> None:
    e, d = gen.prototype_base.shape
    old = gen.context_net
    nets = nn.ModuleList()
    for i in range(e):
        net = nn.Linear(old.in_features, d, bias=old.bias is not None).to(old.weight)
        net.weight = _param(old.weight[i * d : (i + 1) * d], old.weight)
        if old.bias is not None:
            net.bias = _param(old.bias[i * d : (i + 1) * d], old.bias)
        nets.append(net)
    _mode_like(nets, old)
    proj = gen.pre_head_proj
    head = HeadLinear(proj.in_features, proj.out_features, proj.bias is not None, heads=gen.num_heads).to(proj.weight)
    head.weight = _param(proj.weight, proj.weight)
    if proj.bias is not None:
        head.bias = _param(proj.bias, proj.bias)
    _mode_like(head, proj)
    _replace_children(gen, ("context_net",), {"context_nets": nets})
    gen.pre_head_proj = head
    _swap(gen, PrunableAdaHyperedgeGen)


def _restore_hyperedge(gen: PrunableAdaHyperedgeGen) -> None:
    d = gen.prototype_base.shape[1]
    if d % gen.num_heads:
        raise ValueError(f"hypergraph width {d} is no longer a multiple of its {gen.num_heads} heads")
    nets = list(gen.context_nets)
    first = nets[0]
    net = nn.Linear(first.in_features, first.out_features * len(nets), bias=first.bias is not None).to(first.weight)
    net.weight = _param(torch.cat([n.weight for n in nets], 0), first.weight)
    if first.bias is not None:
        net.bias = _param(torch.cat([n.bias for n in nets], 0), first.bias)
    proj = gen.pre_head_proj
    plain = nn.Linear(proj.in_features, proj.out_features, bias=proj.bias is not None).to(proj.weight)
    plain.weight = _param(proj.weight, proj.weight)
    if proj.bias is not None:
        plain.bias = _param(proj.bias, proj.bias)
    _mode_like(plain, proj)
    _mode_like(net, first)
    _replace_children(gen, ("context_nets",), {"context_net": net})
    gen.pre_head_proj = plain
    _swap(gen, AdaHyperedgeGen)


def _prepare_split(block: nn.Module, cls: type) -> None:
    parts = split_conv_block(block.cv1, block.split_sizes)
    _replace_children(block, ("cv1",), {"cv1_parts": _mode_like(nn.ModuleList(parts), block.cv1, recurse=False)})
    _swap(block, cls)


def _restore_split(block: nn.Module, cls: type) -> None:
    parts = list(block.cv1_parts)
    block.split_sizes = [_out(p) for p in parts]
    cv1 = merge_conv_blocks(parts)
    _replace_children(block, ("cv1_parts",), {"cv1": cv1})
    _swap(block, cls)


def _prepare_hyperace(block: HyperACE) -> None:
    _prepare_split(block, PrunableHyperACE)


def _restore_hyperace(block: PrunableHyperACE) -> None:
    _restore_split(block, HyperACE)
    block.c = block.split_sizes[1]  # informational (the width both C3AH branches read)


def _prepare_dsc3k2(block: DSC3k2) -> None:
    _prepare_split(block, PrunableDSC3k2)


def _restore_dsc3k2(block: PrunableDSC3k2) -> None:
    _restore_split(block, DSC3k2)
    block.c = block.split_sizes[1]  # informational (the width the inner blocks read)


def make_prunable(model: nn.Module) -> dict[str, int]:
    """Convert, in place, every block of ``model`` that torch-pruning would misread (see the module doc).

    The outputs stay the same; already converted blocks are left as they are.

    :return: how many blocks of each original class were converted.
    """
    return _convert(model, _PREPARE)


def restore_blocks(model: nn.Module) -> dict[str, int]:
    """Convert every prunable block of ``model`` back to the plugin's class, in place (exact).

    Stored widths follow the current convolutions: TokenC3 ``ls_channels`` / ``reg_channels``,
    HyperACE and DSC3k2 ``split_sizes`` (and ``c``).

    :return: how many blocks of each prunable class were converted back.
    """
    return _convert(model, _RESTORE)


#: exact block type -> (conversion, names counted: a TokenC3 also converts the LSConv it owns)
_Conversions = dict[type, tuple[Callable[[Any], None], tuple[str, ...]]]
_PREPARE: _Conversions = {
    TokenC3: (_prepare_tokenc3, ("TokenC3", "LSConv")),
    DynamicLocalMixer: (_prepare_dllm, ("DynamicLocalMixer",)),
    AdaHyperedgeGen: (_prepare_hyperedge, ("AdaHyperedgeGen",)),
    HyperACE: (_prepare_hyperace, ("HyperACE",)),
    DSC3k2: (_prepare_dsc3k2, ("DSC3k2",)),
    LSConv: (_prepare_lsconv, ("LSConv",)),
}
_RESTORE: _Conversions = {
    PrunableTokenC3: (_restore_tokenc3, ("PrunableTokenC3", "SplitLSConv")),
    PrunableDynamicLocalMixer: (_restore_dllm, ("PrunableDynamicLocalMixer",)),
    PrunableAdaHyperedgeGen: (_restore_hyperedge, ("PrunableAdaHyperedgeGen",)),
    PrunableHyperACE: (_restore_hyperace, ("PrunableHyperACE",)),
    PrunableDSC3k2: (_restore_dsc3k2, ("PrunableDSC3k2",)),
    PrunableLSConv: (_restore_lsconv, ("PrunableLSConv",)),
}


def _convert(model: nn.Module, table: _Conversions) -> dict[str, int]:
    """Apply ``table``'s conversion to every module whose exact type it lists (checked when the
    module is reached, so a block converted as part of its parent is not converted twice)."""
    done: dict[str, int] = {}
    for module in list(model.modules()):
        entry = table.get(type(module))
        if entry is None:
            continue
        convert, names = entry
        convert(module)
        for name in names:
            done[name] = done.get(name, 0) + 1
    return done
