"""Weight masks that stay applied through fine-tuning (parametrizations), and baking them in."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["WeightMask", "set_mask", "make_permanent", "has_masks", "masks_baked"]


class WeightMask(nn.Module):
    """Parametrization ``w -> w * mask``; the boolean ``mask`` buffer is saved in the state dict."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def set_mask(module: nn.Module, attr: str, mask: torch.Tensor) -> None:
    """Apply ``mask`` to ``module.<attr>`` as a parametrization (combined with an existing mask)."""
    if parametrize.is_parametrized(module, attr):
        for p in module.parametrizations[attr]:
            if isinstance(p, WeightMask):
                p.mask &= mask.to(torch.bool)
                return
    parametrize.register_parametrization(module, attr, WeightMask(mask))


def has_masks(model: nn.Module) -> bool:
    """Whether any module carries a :class:`WeightMask`."""
    return any(
        isinstance(p, WeightMask)
        for m in model.modules()
        if parametrize.is_parametrized(m)
        for plist in m.parametrizations.values()
        for p in plist
    )


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every :class:`WeightMask` into its weight and remove the parametrization (in place)."""
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for attr in list(module.parametrizations):
            if any(isinstance(p, WeightMask) for p in module.parametrizations[attr]):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return model


@contextlib.contextmanager
def masks_baked(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily bake masks into the weights (e.g. to save or export), then restore them.

    Deep-copying a parametrized model is not an option: the copy shares the dynamically created
    parametrized classes, and removing a parametrization from one changes the other.
    """
    saved: list[tuple[nn.Module, str, torch.Tensor]] = []
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for attr, plist in module.parametrizations.items():
                saved.extend((module, attr, p.mask.clone()) for p in plist if isinstance(p, WeightMask))
    make_permanent(model)
    try:
        yield model
    finally:
        for module, attr, mask in saved:
            set_mask(module, attr, mask)
