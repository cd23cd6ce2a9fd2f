"""A toy model, inputs and proxy for the sensitivity and search tests (no dataset, no ultralytics)."""

from __future__ import annotations

import torch
from torch import nn


def toy_cnn(width: int = 32) -> nn.Sequential:
    """conv -> bn -> depthwise conv -> conv -> conv -> linear head, for 16x16 inputs; fixed weights."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width),
        nn.Conv2d(width, 2 * width, 1), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10),
    )


X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class Fidelity:
    """``{"fidelity", "mse_loss"}``: how close a model's outputs stay to the reference model's on ``X``."""

    def __init__(self, reference: nn.Module) -> None:
        self.reference = self._out(reference)
        self.calls = 0

    @staticmethod
    @torch.no_grad()
    def _out(model: nn.Module) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            return model(X)
        finally:
            model.train(was)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        self.calls += 1
        mse = float(((self._out(model) - self.reference) ** 2).mean())
        return {"fidelity": -mse, "mse_loss": mse}
