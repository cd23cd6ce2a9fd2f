"""Gradients for gradient-based importance (Taylor)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure.walk import call_model

__all__ = ["compute_gradients", "default_loss"]


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def default_loss(output: Any) -> torch.Tensor:
    """Label-free proxy loss: mean of squares of every floating tensor in the output."""
    parts = [t.float().pow(2).mean() for t in _tensors(output) if t.is_floating_point() and t.requires_grad]
    if not parts:
        raise ConfigError("the model output has no differentiable tensor to build a loss from; pass loss_fn", output)
    return torch.stack(parts).sum()


def compute_gradients(model: nn.Module, example_inputs: Any, loss_fn: Callable[[Any], torch.Tensor] | None) -> None:
    """Zero grads, run one forward/backward (train mode off, so BN statistics stay put)."""
    if example_inputs is None:
        raise ConfigError("gradient-based importance needs example_inputs (a batch) to compute gradients", None)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            output = call_model(model, example_inputs)
            loss = (loss_fn or default_loss)(output)
            loss.backward()
    finally:
        model.train(was_training)
