"""The TokenC3-LSNet / YOLOv13 blocks, grouped by family.

The import paths ``modprune_tokenc3_lsnet.blocks.{lsnet,yolov13,hyperace}.<Class>`` are stable: checkpoints
pickled with this plugin store them.
"""

from __future__ import annotations

from modprune_tokenc3_lsnet.blocks.hyperace import (
    C3AH,
    AdaHGComputation,
    AdaHGConv,
    AdaHyperedgeGen,
    FuseModule,
    HyperACE,
)
from modprune_tokenc3_lsnet.blocks.lsnet import DynamicLocalMixer, LSConv, LSGhostBottleneck, TokenC3
from modprune_tokenc3_lsnet.blocks.yolov13 import (
    DSBottleneck,
    DSC3k,
    DSC3k2,
    DSConv,
    DownsampleConv,
    FullPAD_Tunnel,
)

__all__ = [
    "C3AH",
    "AdaHGComputation",
    "AdaHGConv",
    "AdaHyperedgeGen",
    "DSBottleneck",
    "DSC3k",
    "DSC3k2",
    "DSConv",
    "DownsampleConv",
    "DynamicLocalMixer",
    "FullPAD_Tunnel",
    "FuseModule",
    "HyperACE",
    "LSConv",
    "LSGhostBottleneck",
    "TokenC3",
]
