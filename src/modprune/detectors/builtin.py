"""Built-in detectors for plain PyTorch layers, registered like any plugin's."""

from __future__ import annotations

from torch import nn

from modprune.detectors.base import BLOCK_PRIORITY, LAYER_PRIORITY, Detector, by_type
from modprune.hookspecs import hookimpl

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def _is_depthwise(module: nn.Module) -> bool:
    return module.groups > 1 and module.groups == module.in_channels


@hookimpl
def modprune_register_detectors() -> list[Detector]:
    return [
        by_type("conv", "conv", _CONVS, description="convolutions (any groups)"),
        by_type(
            "depthwise_conv",
            "depthwise_conv",
            _CONVS,
            priority=LAYER_PRIORITY + 5,
            where=_is_depthwise,
            description="convolutions with groups == in_channels > 1",
        ),
        by_type("linear", "linear", nn.Linear, description="fully connected layers"),
        by_type("norm", "norm", _NORMS, description="batch/layer/group/instance norms"),
        by_type(
            "attention",
            "attention",
            nn.MultiheadAttention,
            priority=BLOCK_PRIORITY,
            description="torch.nn.MultiheadAttention",
        ),
    ]
