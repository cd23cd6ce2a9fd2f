"""Per-layer widths and MACs of a model: what ``modprune prune --dry-run`` compares before and after."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modprune.measure.walk import call_model

__all__ = ["LayerRow", "layer_rows", "macs_of_call", "first_tensor"]

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class LayerRow:
    """One convolution or linear layer: its type, widths and the MACs of one forward on the inputs."""

    name: str
    type: str
    out_channels: int
    in_channels: int
    macs: int


def first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value:
        return first_tensor(value[0])
    return None


def macs_of_call(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """Multiply-accumulates of one call of a convolution / linear layer, as FlopCounterMode counts them."""
    x, y = first_tensor(inputs), first_tensor(output)
    if x is None or y is None:
        return 0
    if isinstance(module, nn.Linear):
        return y.numel() * module.in_features
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return x.numel() * (module.out_channels // module.groups) * kernel
    return y.numel() * (module.in_channels // module.groups) * kernel


def _widths(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.out_channels, module.in_channels


@torch.no_grad()
def layer_rows(model: nn.Module, example_inputs: Any) -> dict[str, LayerRow]:
    """``{qualified name: LayerRow}`` of every convolution / linear layer, in module order.

    One forward in eval mode without gradients (the mode is restored); a layer the forward does not
    reach has 0 MACs. MACs outside these layers (attention matmuls, ...) are not in any row.
    """
    counts: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        counts[module] = counts.get(module, 0) + macs_of_call(module, inputs, output)

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, _LAYERS)]
    handles = [m.register_forward_hook(hook) for _, m in layers]
    was_training = model.training
    model.eval()
    try:
        call_model(model, example_inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: LayerRow(name, type(m).__name__, *_widths(m), counts.get(m, 0)) for name, m in layers}
