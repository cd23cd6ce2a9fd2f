"""Structured-pruning support for the TokenC3-LSNet blocks (hook implementations).

* ``modprune_prepare_model``: converts the blocks torch-pruning would misread into the exact
  equivalents of :mod:`modprune_tokenc3_lsnet.prunable` (split first convs of TokenC3 / HyperACE /
  DSC3k2, DLLM kernel generator per kernel position, hypergraph context per hyperedge and heads
  declared, LSConv branch attention as its own layer). Same outputs.
* ``modprune_register_layer_pruners``: the two layer pruners of
  :mod:`modprune_tokenc3_lsnet.layer_pruners` (branch attention, head-grouped linear).
* ``modprune_unwrapped_parameters``: ``AdaHyperedgeGen.prototype_base`` (E, D), channels on dim 1.
  (``FullPAD_Tunnel.gate`` is a scalar and ``LSConv.fusion_weight`` is unused in forward: neither
  needs slicing.)
* ``modprune_finalize_model``: converts the prunable blocks back to the plugin's classes, with the
  stored split sizes following the pruned widths.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from torch import nn

from modprune import hookimpl

log = logging.getLogger(__name__)

_BLOCKS = "modprune_tokenc3_lsnet.blocks"


def _has_blocks() -> bool:
    """A model can hold the plugin's blocks only once they were imported."""
    return _BLOCKS in sys.modules


@hookimpl
def modprune_prepare_model(model: nn.Module, config: Any) -> None:
    if not _has_blocks():
        return
    from modprune_tokenc3_lsnet.prunable import make_prunable  # noqa: PLC0415

    done = make_prunable(model)
    if done:
        log.info("TokenC3-LSNet blocks made prunable (same outputs): %s", done)


@hookimpl
def modprune_register_layer_pruners() -> list[tuple[type, Any]]:
    from modprune_tokenc3_lsnet.layer_pruners import layer_pruners  # noqa: PLC0415

    return layer_pruners()


@hookimpl
def modprune_unwrapped_parameters(model: nn.Module) -> list[tuple[Any, int]]:
    if not _has_blocks():
        return []
    from modprune_tokenc3_lsnet.blocks import AdaHyperedgeGen  # noqa: PLC0415

    return [
        (m.prototype_base, 1)
        for m in model.modules()
        if isinstance(m, AdaHyperedgeGen) and isinstance(getattr(m, "prototype_base", None), nn.Parameter)
    ]


@hookimpl
def modprune_finalize_model(model: nn.Module) -> None:
    if not _has_blocks():
        return
    from modprune_tokenc3_lsnet.prunable import restore_blocks  # noqa: PLC0415

    done = restore_blocks(model)
    if done:
        log.info("TokenC3-LSNet prunable blocks converted back: %s", done)
