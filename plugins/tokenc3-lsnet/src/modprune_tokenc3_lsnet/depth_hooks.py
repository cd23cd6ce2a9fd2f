"""The TokenC3-LSNet blocks depth pruning may remove (hook ``modprune_removable_blocks``).

* ``LSGhostBottleneck`` with its shortcut on (``add``: ``x + out``; TokenC3's LS chain): kind ``residual``,
  replaced by ``nn.Identity``;
* ``DSBottleneck`` with its shortcut on (``x + cv2(cv1(x))``; inside DSC3k, DSC3k2 and HyperACE's chain):
  kind ``residual``, replaced by ``nn.Identity``;
* the ``DynamicLocalMixer`` of an ``LSGhostBottleneck`` (its ``dllm``): kind ``optional``, removed by setting
  ``dllm`` to ``None``, which the bottleneck's forward skips (the ``0.4 * dllm(p) * mask`` term goes; this is
  exactly the block built with ``use_dllm=False``). It keeps every shape whether or not the bottleneck has a
  shortcut.

TokenC3's regular chain holds ultralytics ``Bottleneck`` s, which modprune's ultralytics integration
offers. A TokenC3 built with ``shortcut=False`` (layers 2 and 4 of TokenC3-LSNet-n) offers only its mixers.
Uses only modprune's public API.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from modprune import RemovableBlock, hookimpl

_BLOCKS = "modprune_tokenc3_lsnet.blocks"


@hookimpl
def modprune_removable_blocks(model: nn.Module) -> list[Any]:
    blocks = sys.modules.get(_BLOCKS)
    if blocks is None:  # a model cannot hold the plugin's blocks before they are imported
        return []
    ghost, ds = blocks.LSGhostBottleneck, blocks.DSBottleneck
    found: list[RemovableBlock] = []
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, ghost) and type(module).forward is ghost.forward:
            if bool(getattr(module, "add", False)):
                found.append(RemovableBlock(module, name, kind="residual", removal="identity"))
            if isinstance(getattr(module, "dllm", None), nn.Module):
                found.append(RemovableBlock(module.dllm, f"{name}.dllm", kind="optional", removal="none"))
        elif isinstance(module, ds) and type(module).forward is ds.forward and bool(getattr(module, "add", False)):
            found.append(RemovableBlock(module, name, kind="residual", removal="identity"))
    return found
