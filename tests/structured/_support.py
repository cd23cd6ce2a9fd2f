"""Helpers shared by the structured-pruning tests (models, inputs)."""

from __future__ import annotations

import functools

import torch
from torch import nn

ULTRALYTICS_MODELS = ("yolov8n", "yolo11n", "yolo12n")
TORCHVISION_MODELS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "densenet121")
#: Input size used to prune (small: tracing cost and MAC counts scale with it).
PRUNE_SIZE = 64


@functools.lru_cache(maxsize=None)
def base_model(name: str) -> nn.Module:
    """A model built once per session (ultralytics from its yaml, torchvision without weights)."""
    torch.manual_seed(0)
    if name in ULTRALYTICS_MODELS:
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel(f"{name}.yaml", nc=80, verbose=False)
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
    model.eval()
    randomise_norms(model)
    return model


def randomise_norms(model: nn.Module) -> None:
    """Untrained BatchNorms are identities with equal scales; give them distinct, realistic values."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def example(size: int = PRUNE_SIZE, batch: int = 1) -> torch.Tensor:
    """A deterministic image batch."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))


def main_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's prediction tensor (ultralytics returns ``(predictions, raw dict)`` in eval mode)."""
    with torch.no_grad():
        out = model.eval()(x)
    return out[0] if isinstance(out, (tuple, list)) else out
