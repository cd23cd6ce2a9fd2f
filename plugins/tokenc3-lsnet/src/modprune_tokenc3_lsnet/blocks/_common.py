"""Small layer factories shared by the block families.

Every BatchNorm built here uses eps=1e-3 and momentum=0.03, the values ultralytics'
``initialize_weights`` gives every ``nn.BatchNorm2d`` of a ``DetectionModel``; setting them at
construction makes a block built on its own behave the same as one inside a model.
"""

from __future__ import annotations

from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def bn2d(channels: int) -> nn.BatchNorm2d:
    """Return a plain ``nn.BatchNorm2d`` with ultralytics' eps and momentum."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def conv2d(c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, bias: bool = False, d: int = 1) -> nn.Conv2d:
    """Return an ``nn.Conv2d`` with 'same' padding for odd kernels (``d * (k - 1) // 2``)."""
    return nn.Conv2d(c1, c2, k, s, padding=d * (k - 1) // 2, dilation=d, groups=groups, bias=bias)


def depthwise(channels: int, k: int, bias: bool = False) -> nn.Conv2d:
    """Return a depthwise k x k convolution (groups = channels, stride 1, 'same' padding)."""
    return conv2d(channels, channels, k, groups=channels, bias=bias)
