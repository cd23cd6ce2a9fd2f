"""Exact surgery on convolution blocks: slicing, splitting and merging channels.

The toolkit for plugin authors writing prunable rewrites (``modprune_prepare_model``): a block whose
forward splits a convolution's output by stored sizes becomes one convolution per piece, and back
again after pruning. Every function copies or re-lays out existing tensors (sliced or concatenated,
never recomputed), so a rewritten model computes exactly what the original did.

A *conv block* is an ``nn.Conv2d``, or a module holding one as ``conv`` with an optional BatchNorm
``bn`` and parameter-free children (an activation), like ultralytics' ``Conv``. A *per-channel
block* is an ``nn.Sequential`` of depthwise convolutions, BatchNorms and parameter-free layers.
``keep`` is a ``slice`` or a sequence of channel indices.

Functions named ``slice_*`` without ``_block`` change the module they are given, in place; the
``*_block`` functions and the merges return new modules and leave their arguments untouched.
"""

from __future__ import annotations

import copy
from typing import Sequence, Union

import torch
from torch import nn

from modprune.exceptions import UnsupportedModelError

__all__ = [
    "Keep",
    "conv_of",
    "copy_block",
    "merge_conv_blocks",
    "merge_per_channel",
    "new_parameter",
    "slice_batchnorm",
    "slice_conv_block",
    "slice_conv_in",
    "slice_conv_out",
    "slice_per_channel",
    "split_conv_block",
]

#: Which channels to keep: a ``slice`` or channel indices.
Keep = Union[slice, Sequence[int]]

_BatchNorm = nn.modules.batchnorm._BatchNorm


def _index(keep: Keep) -> slice | torch.Tensor:
    return keep if isinstance(keep, slice) else torch.as_tensor(list(keep), dtype=torch.long)


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def conv_of(block: nn.Module) -> nn.Conv2d | None:
    """The ``nn.Conv2d`` of a conv block (the block itself, or its ``conv`` attribute); None if neither."""
    if isinstance(block, nn.Conv2d):
        return block
    conv = getattr(block, "conv", None)
    return conv if isinstance(conv, nn.Conv2d) else None


def new_parameter(value: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    """A parameter holding a detached copy of ``value``, with ``like``'s ``requires_grad``."""
    return nn.Parameter(value.detach().clone(), requires_grad=like.requires_grad)


def copy_block(block: nn.Module) -> nn.Module:
    """A deep copy of ``block`` that keeps sharing its stateless children (no parameters, no buffers).

    ultralytics' ``Conv`` shares one activation module between all instances; the copy does too.
    """
    new = copy.deepcopy(block)
    for name, child in block.named_children():
        if not _has_state(child):
            setattr(new, name, child)
    return new


def _unsupported(block: nn.Module, name: str, why: str) -> UnsupportedModelError:
    label = f"{name} ({type(block).__name__})" if name else type(block).__name__
    return UnsupportedModelError(f"cannot slice {label}: {why}; protect the block's category instead", name or block)


def slice_conv_out(conv: nn.Conv2d, keep: Keep, name: str = "") -> None:
    """Keep only the output channels ``keep`` of ``conv``, in place (weight, bias, ``out_channels``).

    A depthwise convolution loses the matching inputs too (its ``groups`` follow).

    :raises UnsupportedModelError: ``conv`` is grouped but not depthwise.
    """
    depthwise = _is_depthwise(conv) and conv.groups > 1
    if conv.groups != 1 and not depthwise:
        raise _unsupported(conv, name, f"a grouped convolution (groups={conv.groups}) cannot be sliced by channel")
    index = _index(keep)
    conv.weight = new_parameter(conv.weight[index], conv.weight)
    if conv.bias is not None:
        conv.bias = new_parameter(conv.bias[index], conv.bias)
    conv.out_channels = int(conv.weight.shape[0])
    if depthwise:
        conv.in_channels = conv.groups = conv.out_channels


def slice_conv_in(conv: nn.Conv2d, keep: Keep, name: str = "") -> None:
    """Keep only the input channels ``keep`` of ``conv``, in place (weight, ``in_channels``).

    A depthwise convolution loses the matching outputs too (see :func:`slice_conv_out`).

    :raises UnsupportedModelError: ``conv`` is grouped but not depthwise.
    """
    if conv.groups != 1:
        if not _is_depthwise(conv):
            raise _unsupported(conv, name, f"a grouped convolution (groups={conv.groups}) cannot be sliced by channel")
        slice_conv_out(conv, keep, name)
        return
    conv.weight = new_parameter(conv.weight[:, _index(keep)], conv.weight)
    conv.in_channels = int(conv.weight.shape[1])


def slice_batchnorm(bn: _BatchNorm, keep: Keep) -> None:
    """Keep only the channels ``keep`` of a BatchNorm, in place (affine parameters, running statistics)."""
    index = _index(keep)
    if bn.affine:
        bn.weight = new_parameter(bn.weight[index], bn.weight)
        bn.bias = new_parameter(bn.bias[index], bn.bias)
    if bn.running_mean is not None and bn.running_var is not None:
        bn.running_mean = bn.running_mean[index].clone()
        bn.running_var = bn.running_var[index].clone()
    bn.num_features = len(range(bn.num_features)[index]) if isinstance(index, slice) else len(index)


def _checked_conv(block: nn.Module, name: str) -> nn.Conv2d:
    """The block's conv, after checking that nothing else in the block holds per-channel state."""
    conv = conv_of(block)
    if conv is None:
        raise _unsupported(block, name, "expected an nn.Conv2d or a block holding one as 'conv'")
    others = [
        f"{child_name} ({type(child).__name__})"
        for child_name, child in block.named_children()
        if child is not conv and not (child_name == "bn" and isinstance(child, _BatchNorm)) and _has_state(child)
    ]
    if others:
        raise _unsupported(block, name, f"its submodules {', '.join(others)} hold state modprune cannot slice")
    return conv


def slice_conv_block(block: nn.Module, keep: Keep, name: str = "") -> nn.Module:
    """A copy of a conv block computing only the output channels ``keep`` of ``block``.

    :param name: the block's qualified name, for error messages.
    :raises UnsupportedModelError: not a conv block, a grouped conv, or other children hold state.
    """
    conv = _checked_conv(block, name)
    if conv.groups != 1:
        raise _unsupported(block, name, f"its convolution is grouped (groups={conv.groups})")
    new = copy_block(block)
    new_conv = _checked_conv(new, name)  # a copy of a conv block is one
    slice_conv_out(new_conv, keep, name)
    bn = getattr(new, "bn", None)
    if isinstance(bn, _BatchNorm):
        slice_batchnorm(bn, keep)
    return new


def split_conv_block(block: nn.Module, widths: Sequence[int], name: str = "") -> list[nn.Module]:
    """Copies of a conv block, one per consecutive run of ``widths`` output channels.

    The concatenation (dim 1) of the parts' outputs is the block's output.

    :raises UnsupportedModelError: the widths do not add up to the outputs (or one is < 1), or see
        :func:`slice_conv_block`.
    """
    conv = _checked_conv(block, name)
    widths = [int(w) for w in widths]
    if not widths or sum(widths) != conv.out_channels or min(widths) < 1:
        raise _unsupported(block, name, f"its {conv.out_channels} output channels cannot be split into {widths}")
    parts, start = [], 0
    for width in widths:
        parts.append(slice_conv_block(block, slice(start, start + width), name))
        start += width
    return parts


def _cat_parameter(params: list[nn.Parameter]) -> nn.Parameter:
    return new_parameter(torch.cat([p.detach() for p in params], 0), params[0])


def _merge_conv(target: nn.Conv2d, convs: list[nn.Conv2d]) -> None:
    target.weight = _cat_parameter([c.weight for c in convs])
    if target.bias is not None:
        target.bias = _cat_parameter([c.bias for c in convs])
    target.out_channels = int(target.weight.shape[0])
    if _is_depthwise(convs[0]) and convs[0].groups > 1:
        target.in_channels = target.groups = target.out_channels


def _merge_batchnorm(target: _BatchNorm, bns: list[_BatchNorm]) -> None:
    if target.affine:
        target.weight = _cat_parameter([b.weight for b in bns])
        target.bias = _cat_parameter([b.bias for b in bns])
    if target.running_mean is not None and target.running_var is not None:
        target.running_mean = torch.cat([b.running_mean for b in bns]).clone()
        target.running_var = torch.cat([b.running_var for b in bns]).clone()
    target.num_features = sum(b.num_features for b in bns)


def merge_conv_blocks(parts: Sequence[nn.Module]) -> nn.Module:
    """One conv block whose output is the concatenation of ``parts``' outputs (inverse of
    :func:`split_conv_block`); a copy of the first part with the weights of all of them."""
    parts = list(parts)
    convs = [_checked_conv(p, "") for p in parts]
    new = copy_block(parts[0])
    new_conv = _checked_conv(new, "")  # a copy of a conv block is one
    _merge_conv(new_conv, convs)
    bn = getattr(new, "bn", None)
    if isinstance(bn, _BatchNorm):
        _merge_batchnorm(bn, [p.bn for p in parts])
    return new


def slice_per_channel(block: nn.Sequential, keep: Keep, name: str = "") -> nn.Sequential:
    """A copy of a per-channel block (depthwise convs, BatchNorms, parameter-free layers) for the
    channels ``keep``.

    :raises UnsupportedModelError: a conv is not depthwise, or another layer holds state.
    """
    new = copy.deepcopy(block)
    for layer in new:
        if isinstance(layer, nn.Conv2d):
            if not _is_depthwise(layer):
                raise _unsupported(block, name, "expected depthwise convolutions only")
            slice_conv_out(layer, keep, name)
        elif isinstance(layer, _BatchNorm):
            slice_batchnorm(layer, keep)
        elif _has_state(layer):
            raise _unsupported(block, name, f"{type(layer).__name__} cannot be sliced per channel")
    return new


def merge_per_channel(parts: Sequence[nn.Sequential]) -> nn.Sequential:
    """The per-channel block computing the concatenation of ``parts`` (inverse of :func:`slice_per_channel`)."""
    parts = list(parts)
    new = copy.deepcopy(parts[0])
    for i, layer in enumerate(new):
        layers = [p[i] for p in parts]
        if isinstance(layer, nn.Conv2d):
            _merge_conv(layer, layers)
        elif isinstance(layer, _BatchNorm):
            _merge_batchnorm(layer, layers)
    return new
