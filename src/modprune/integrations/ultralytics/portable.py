"""Portable checkpoints: write pruned models with ultralytics' own classes where their widths allow.

Structured pruning rewrites C2f-like blocks into modprune's split blocks (two first convolutions, see
:mod:`modprune.integrations.ultralytics.rewrite`). When the two halves still have equal widths after
pruning, the block is exactly an ultralytics block again: :func:`to_stock_blocks` merges the two
convolutions back into one ``cv1`` (weights and BatchNorm statistics concatenated), so a checkpoint
holding only ultralytics and torch classes loads with ``ultralytics.YOLO(path)`` where modprune is not
installed. :func:`equalize_split_widths` is the constraint that makes it possible after a pruner cut
the halves unequally: it removes the lowest-L2 output channels of the wider half (through
torch-pruning's dependency graph, so every consumer follows) until both halves match.

:func:`equal_width_pairs` is what the ultralytics plugin answers to ``modprune_equal_width_layers``, so
structured pruning with ``pruner_options: {portable: true}`` applies that constraint itself.
:func:`required_packages` names the distributions whose classes a model still pickles.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from modprune.integrations.ultralytics.blocks import SplitBlock

__all__ = ["equal_width_pairs", "equalize_split_widths", "required_packages", "split_widths", "to_stock_blocks"]

LOG = logging.getLogger(__name__)

# Top-level module -> the distribution to install (pip normalises '_' to '-').
_NEUTRAL = {"torch", "ultralytics", "builtins", "collections", "torchvision"}


def equal_width_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """``(cv1a.conv, cv1b.conv)`` of every split block that is an ultralytics class when its halves match
    (what structured pruning with ``pruner_options: {portable: true}`` narrows to equal widths)."""
    return [(b.cv1a.conv, b.cv1b.conv) for b in model.modules()
            if isinstance(b, SplitBlock) and _stock_class(b) is not None
            and isinstance(getattr(b.cv1a, "conv", None), nn.Conv2d) and isinstance(getattr(b.cv1b, "conv", None), nn.Conv2d)]


def split_widths(block: SplitBlock) -> tuple[int, int]:
    """Output widths of the two first convolutions ``(cv1a, cv1b)``."""
    return block.out_channels(block.cv1a), block.out_channels(block.cv1b)


def _stock_class(block: SplitBlock) -> type | None:
    from ultralytics.nn.modules import block as ub  # noqa: PLC0415

    cls = getattr(ub, block.source_type, None)
    bases = (ub.C2f, ub.C2, ub.C2PSA, ub.PSA, ub.RepNCSPELAN4)
    return cls if isinstance(cls, type) and issubclass(cls, bases) else None


def _merged_conv(a: nn.Module, b: nn.Module) -> nn.Module:
    """One convolution block computing ``cat([a(x), b(x)], 1)`` (ultralytics ``Conv``: conv, bn, act)."""
    new = copy.deepcopy(a)
    ca, cb, cn = a.conv, b.conv, new.conv
    cn.weight = nn.Parameter(torch.cat([ca.weight.detach(), cb.weight.detach()], 0), ca.weight.requires_grad)
    if ca.bias is not None:
        cn.bias = nn.Parameter(torch.cat([ca.bias.detach(), cb.bias.detach()], 0), ca.bias.requires_grad)
    cn.out_channels = int(cn.weight.shape[0])
    bn, ba, bb = getattr(new, "bn", None), getattr(a, "bn", None), getattr(b, "bn", None)
    if isinstance(bn, nn.modules.batchnorm._BatchNorm):
        if bn.affine:
            bn.weight = nn.Parameter(torch.cat([ba.weight.detach(), bb.weight.detach()]), ba.weight.requires_grad)
            bn.bias = nn.Parameter(torch.cat([ba.bias.detach(), bb.bias.detach()]), ba.bias.requires_grad)
        if bn.running_mean is not None:
            bn.running_mean = torch.cat([ba.running_mean, bb.running_mean])
            bn.running_var = torch.cat([ba.running_var, bb.running_var])
        bn.num_features = cn.out_channels
    return new


def _as_stock(block: SplitBlock) -> nn.Module | None:
    """The ultralytics block equal to ``block``, or None when its halves differ or its class is unknown."""
    cls = _stock_class(block)
    wa, wb = split_widths(block)
    if cls is None or wa != wb or wa == 0 or not hasattr(block.cv1a, "conv") or not hasattr(block.cv1b, "conv"):
        return None
    inst = cls.__new__(cls)
    nn.Module.__init__(inst)
    inst.cv1 = _merged_conv(block.cv1a, block.cv1b)
    for name, child in block.named_children():
        if name not in ("cv1a", "cv1b"):
            setattr(inst, name, child)
    inst.c = wa
    for attr in SplitBlock.LAYER_ATTRS:
        if attr in vars(block):
            setattr(inst, attr, getattr(block, attr))
    inst.train(block.training)
    return inst


def to_stock_blocks(model: nn.Module, converted: list[str] | None = None) -> list[str]:
    """Replace, in place, every split block whose halves have equal widths by its ultralytics class.

    :param converted: when given, the names of the blocks replaced are appended to it.
    :return: qualified names of the split blocks left as modprune classes (unequal halves).
    """
    kept: list[str] = []
    targets = [(n, m) for n, m in model.named_modules() if n and isinstance(m, SplitBlock)]
    for name, block in sorted(targets, key=lambda item: item[0].count("."), reverse=True):
        stock = _as_stock(block)
        if stock is None:
            kept.append(name)
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, stock)
        if converted is not None:
            converted.append(name)
    LOG.debug("stock blocks restored; %d split blocks kept: %s", len(kept), kept)
    return sorted(kept)


def required_packages(model: nn.Module) -> list[str]:
    """Distributions (beyond torch and ultralytics) whose classes ``model`` holds, e.g. ``["modprune"]``."""
    tops = {type(m).__module__.split(".")[0] for m in model.modules()}
    return sorted(t.replace("_", "-") for t in tops - _NEUTRAL)


def equalize_split_widths(model: nn.Module, example_inputs: Any) -> list[str]:
    """Prune the wider half of every split block down to the narrower one (lowest L2 channels first).

    The model must be in its pruned form (split blocks present). Returns the names of the blocks changed.
    """
    import torch_pruning as tp  # noqa: PLC0415

    from modprune.pruners.structured_graph import tracing_mode  # noqa: PLC0415

    uneven = [(n, b) for n, b in model.named_modules() if isinstance(b, SplitBlock) and len(set(split_widths(b))) > 1]
    if not uneven:
        return []
    with tracing_mode(model):
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
        for _, block in uneven:
            wa, wb = split_widths(block)
            wide = block.cv1a if wa > wb else block.cv1b
            conv = wide.conv
            norms = conv.weight.detach().flatten(1).norm(dim=1)
            drop = torch.argsort(norms)[: abs(wa - wb)].tolist()
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop)
            group.prune()
            block.update_widths()
    LOG.info("equalised the halves of %d split blocks", len(uneven))
    return [n for n, _ in uneven]
