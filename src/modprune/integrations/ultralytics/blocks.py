"""Prunable equivalents of ultralytics CSP blocks whose first convolution's output is ``chunk``-ed or ``split``.

ultralytics' C2f, C3k2, C2, C2PSA, PSA, RepNCSPELAN4 and ELAN1 compute one convolution ``cv1`` with
``2 * c`` output channels and split it into two halves. A channel pruner that removes channels from
``cv1`` unevenly breaks the split (torch-pruning 1.6.1 fails with an ``IndexError`` on yolov8n), and the
stored split sizes go stale. The classes here hold the two halves as two convolutions, ``cv1a`` and
``cv1b`` (the weights copied from ``cv1``, so the outputs are the same), which a pruner may shrink
independently.

The classes are defined at module level under a stable import path, so that a pruned model pickles:
``ultralytics.YOLO(path)`` and :func:`modprune.load` rebuild them by importing this module. This
module does not import ultralytics; the conversion from ultralytics' classes lives in
:mod:`modprune.integrations.ultralytics.rewrite`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SPLIT_BLOCKS", "SplitBlock", "SplitC2", "SplitC2f", "SplitC2PSA", "SplitELAN", "SplitPSA"]


class SplitBlock(nn.Module):
    """Base of the split blocks: two first convolutions ``cv1a`` and ``cv1b`` instead of one ``cv1``.

    ``c`` is the width of the ``cv1b`` branch (the one the inner blocks process), kept up to date by
    :meth:`update_widths` after pruning. ``source_type`` names the ultralytics class it replaced.
    """

    #: Layer-bookkeeping attributes of ultralytics' ``DetectionModel`` layers, copied over on rewrite.
    LAYER_ATTRS = ("i", "f", "type", "np")

    def __init__(self, cv1a: nn.Module, cv1b: nn.Module, source_type: str) -> None:
        super().__init__()
        self.cv1a = cv1a
        self.cv1b = cv1b
        self.source_type = source_type
        self.c = 0
        self.update_widths()

    @staticmethod
    def out_channels(module: nn.Module) -> int:
        """Output channels of a convolution block (an ``nn.Conv2d`` or a module holding one as ``conv``)."""
        conv = module if isinstance(module, nn.Conv2d) else getattr(module, "conv", None)
        return int(conv.out_channels) if isinstance(conv, nn.Conv2d) else 0

    def update_widths(self) -> None:
        """Refresh stored widths from the current convolutions (call after pruning)."""
        self.c = self.out_channels(self.cv1b)

    def forward_split(self, *args: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward` (ultralytics' exporter may call ``forward_split``)."""
        return self.forward(*args)


class SplitC2f(SplitBlock):
    """C2f and its subclasses (C3k2, C2fCIB, C2fPSA): ``cv2(cat[a, b, m1(b), m2(m1(b)), ...])``."""

    def __init__(self, cv1a: nn.Module, cv1b: nn.Module, m: nn.ModuleList, cv2: nn.Module, source_type: str) -> None:
        super().__init__(cv1a, cv1b, source_type)
        self.m = m
        self.cv2 = cv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block."""
        y = [self.cv1a(x), self.cv1b(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SplitC2(SplitBlock):
    """C2: ``cv2(cat[m(a), b])`` where ``a = cv1a(x)``, ``b = cv1b(x)``."""

    def __init__(self, cv1a: nn.Module, cv1b: nn.Module, m: nn.Module, cv2: nn.Module, source_type: str) -> None:
        super().__init__(cv1a, cv1b, source_type)
        self.m = m
        self.cv2 = cv2

    def update_widths(self) -> None:
        """In C2 the inner blocks process the ``cv1a`` half."""
        self.c = self.out_channels(self.cv1a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block."""
        return self.cv2(torch.cat((self.m(self.cv1a(x)), self.cv1b(x)), 1))


class SplitC2PSA(SplitBlock):
    """C2PSA: ``cv2(cat[a, m(b)])``."""

    def __init__(self, cv1a: nn.Module, cv1b: nn.Module, m: nn.Module, cv2: nn.Module, source_type: str) -> None:
        super().__init__(cv1a, cv1b, source_type)
        self.m = m
        self.cv2 = cv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block."""
        return self.cv2(torch.cat((self.cv1a(x), self.m(self.cv1b(x))), 1))


class SplitPSA(SplitBlock):
    """PSA: ``b = b + attn(b); b = b + ffn(b); cv2(cat[a, b])``."""

    def __init__(
        self, cv1a: nn.Module, cv1b: nn.Module, attn: nn.Module, ffn: nn.Module, cv2: nn.Module, source_type: str
    ) -> None:
        super().__init__(cv1a, cv1b, source_type)
        self.attn = attn
        self.ffn = ffn
        self.cv2 = cv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block."""
        b = self.cv1b(x)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((self.cv1a(x), b), 1))


class SplitELAN(SplitBlock):
    """RepNCSPELAN4 and ELAN1: ``cv4(cat[a, b, cv2(b), cv3(cv2(b))])``."""

    def __init__(
        self, cv1a: nn.Module, cv1b: nn.Module, cv2: nn.Module, cv3: nn.Module, cv4: nn.Module, source_type: str
    ) -> None:
        super().__init__(cv1a, cv1b, source_type)
        self.cv2 = cv2
        self.cv3 = cv3
        self.cv4 = cv4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block."""
        y = [self.cv1a(x), self.cv1b(x)]
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))


#: Every split block class (for safe-globals registration).
SPLIT_BLOCKS: tuple[type[SplitBlock], ...] = (SplitC2f, SplitC2, SplitC2PSA, SplitPSA, SplitELAN)
