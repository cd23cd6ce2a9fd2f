"""Built-in pruners, registered like any plugin's."""

from __future__ import annotations

from modprune.hookspecs import hookimpl
from modprune.pruners.base import Pruner
from modprune.pruners.depth import DepthPruner
from modprune.pruners.depth_structured import DepthStructuredPruner
from modprune.pruners.masks import WeightMask
from modprune.pruners.structured import StructuredPruner
from modprune.pruners.unstructured import UnstructuredPruner


@hookimpl
def modprune_register_pruners() -> list[Pruner]:
    return [UnstructuredPruner(), StructuredPruner(), DepthPruner(), DepthStructuredPruner()]


@hookimpl
def modprune_register_safe_globals() -> list[type]:
    return [WeightMask]
