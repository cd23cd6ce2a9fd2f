"""Gradients for gradient-based importance (Taylor)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure.walk import call_model, tensors_of

__all__ = ["compute_gradients", "default_loss"]


def default_loss(output: Any) -> torch.Tensor:
    """Label-free proxy loss: mean of squares of every floating tensor in the output."""
    parts = [t.float().pow(2).mean() for t in tensors_of(output) if t.is_floating_point() and t.requires_grad]
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
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:  # e.g. a checkpoint loaded for inference: gradients are needed for scoring
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            output = call_model(model, example_inputs)
            loss = (loss_fn or default_loss)(output)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                raise ConfigError(
                    f"loss_fn must return a differentiable scalar tensor, got {_describe(loss)}", loss
                )
            loss.backward()
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
    for p in model.parameters():  # parameters the loss does not reach score zero, not "no gradient"
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}" + ("" if value.requires_grad else " without grad")
    return type(value).__name__
