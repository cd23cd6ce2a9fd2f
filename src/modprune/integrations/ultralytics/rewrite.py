"""Rewrite ultralytics blocks into prunable equivalents with the same outputs (model preparation).

Blocks whose first convolution's output is split in two halves (C2f and subclasses such as C3k2, C2,
C2PSA, PSA, RepNCSPELAN4, ELAN1) become the split blocks of
:mod:`modprune.integrations.ultralytics.blocks`: ``cv1`` is replaced by two convolutions holding the two
halves of its weights (and BatchNorm statistics), so the outputs are unchanged.

ultralytics is imported inside the functions, never at import time.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Callable, Collection

import torch
from torch import nn

from modprune.exceptions import UnsupportedModelError
from modprune.integrations.ultralytics.blocks import (
    SplitBlock,
    SplitC2,
    SplitC2f,
    SplitC2PSA,
    SplitELAN,
    SplitPSA,
)
from modprune.surgery import conv_of, split_conv_block

__all__ = ["Rewrite", "rewrite_blocks", "split_conv"]

log = logging.getLogger(__name__)

Builder = Callable[[nn.Module, nn.Module, nn.Module, str], SplitBlock]


@dataclass(frozen=True)
class Rewrite:
    """One block replaced by :func:`rewrite_blocks`."""

    name: str
    source_type: str
    target_type: str


def split_conv(module: nn.Module, first: int, qualified_name: str = "") -> tuple[nn.Module, nn.Module]:
    """Two copies of a convolution block: output channels ``[0, first)`` and ``[first, end)``.

    :param module: an ``nn.Conv2d`` or an ultralytics ``Conv`` (conv, optional BatchNorm ``bn``, activation).
    :raises UnsupportedModelError: the block holds other per-channel parameters, or the conv is grouped.
    """
    conv = conv_of(module)
    total = conv.out_channels if conv is not None else 0
    if not 0 < first < total:
        raise UnsupportedModelError(
            f"cannot split {qualified_name} ({type(module).__name__}) at channel {first}: it has {total} outputs",
            qualified_name,
        )
    a, b = split_conv_block(module, (first, total - first), qualified_name)
    return a, b


def _halves(block: nn.Module, name: str) -> tuple[nn.Module, nn.Module]:
    """``cv1`` of ``block`` split in two equal halves (the block's ``chunk(2, 1)`` / ``split((c, c), 1)``)."""
    conv = conv_of(block.cv1)
    total = conv.out_channels if conv is not None else 0
    if total % 2:
        raise UnsupportedModelError(
            f"{name}.cv1 ({type(block.cv1).__name__}) has an odd number of outputs ({total}); cannot split it in "
            "halves. Protect the block's category instead",
            name,
        )
    return split_conv(block.cv1, total // 2, f"{name}.cv1")


def _c2f(block: nn.Module, a: nn.Module, b: nn.Module, source: str) -> SplitBlock:
    return SplitC2f(a, b, block.m, block.cv2, source)


def _c2(block: nn.Module, a: nn.Module, b: nn.Module, source: str) -> SplitBlock:
    return SplitC2(a, b, block.m, block.cv2, source)


def _c2psa(block: nn.Module, a: nn.Module, b: nn.Module, source: str) -> SplitBlock:
    return SplitC2PSA(a, b, block.m, block.cv2, source)


def _psa(block: nn.Module, a: nn.Module, b: nn.Module, source: str) -> SplitBlock:
    return SplitPSA(a, b, block.attn, block.ffn, block.cv2, source)


def _elan(block: nn.Module, a: nn.Module, b: nn.Module, source: str) -> SplitBlock:
    return SplitELAN(a, b, block.cv2, block.cv3, block.cv4, source)


def _rules() -> list[tuple[type, Callable[..., torch.Tensor], Builder]]:
    """(ultralytics class, the forward it must use, builder) for every block with a split first conv."""
    from ultralytics.nn.modules import block as ub  # noqa: PLC0415 - only when ultralytics is in use

    rules: list[tuple[type, Callable[..., torch.Tensor], Builder]] = [
        (ub.C2f, ub.C2f.forward, _c2f),
        (ub.C2, ub.C2.forward, _c2),
        (ub.C2PSA, ub.C2PSA.forward, _c2psa),
        (ub.PSA, ub.PSA.forward, _psa),
        (ub.RepNCSPELAN4, ub.RepNCSPELAN4.forward, _elan),
    ]
    return rules


def _builder_for(module: nn.Module, rules: list[tuple[type, Callable[..., torch.Tensor], Builder]]) -> Builder | None:
    for cls, forward, builder in rules:
        # A subclass that overrides forward (e.g. C2fAttn-like variants) computes something else: leave it.
        if isinstance(module, cls) and type(module).forward is forward and "forward" not in vars(module):
            return builder
    return None


def rewrite_blocks(model: nn.Module, only: Collection[str] | None = None) -> list[Rewrite]:
    """Replace, in place, every ultralytics block whose ``cv1`` output is split by its split equivalent.

    A model that contains no ultralytics module is returned untouched (without importing ultralytics).
    ``only`` limits the rewrite to those qualified names.

    :return: what was replaced, by qualified name.
    """
    if "ultralytics" not in sys.modules:
        return []
    rules = _rules()
    targets = [(name, module) for name, module in model.named_modules() if name and _builder_for(module, rules)
               and (only is None or name in only)]
    targets.sort(key=lambda item: item[0].count("."), reverse=True)  # innermost first
    done: list[Rewrite] = []
    for name, block in targets:
        builder = _builder_for(block, rules)
        if builder is None:  # pragma: no cover - filtered above
            continue
        a, b = _halves(block, name)
        new = builder(block, a, b, type(block).__name__)
        for attr in SplitBlock.LAYER_ATTRS:
            if attr in vars(block):
                setattr(new, attr, getattr(block, attr))
        new.train(block.training)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, new)
        done.append(Rewrite(name, type(block).__name__, type(new).__name__))
        log.debug("rewrote %s (%s) as %s", name, type(block).__name__, type(new).__name__)
    return done
