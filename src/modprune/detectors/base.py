"""The :class:`Detector` type and its precedence rules.

Precedence ("most specific wins"): each parameter takes the category of the best detector that
matches its owning module or any ancestor, comparing ``(priority, depth)``: a higher priority
wins; at equal priority the deeper (more specific) module wins. Conventional priorities:

- ``LAYER_PRIORITY`` (0): single layers by type (conv, linear, norm); depthwise conv uses 5 so it
  beats plain conv on the same module.
- ``BLOCK_PRIORITY`` (50): blocks (attention, a plugin's custom block). A block's category covers
  the plain layers inside it; a block nested in another block wins over its parent.
- ``HEAD_PRIORITY`` (100): heads (detection head): everything inside belongs to the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

__all__ = ["Detector", "by_type", "LAYER_PRIORITY", "BLOCK_PRIORITY", "HEAD_PRIORITY", "OTHER"]

LAYER_PRIORITY = 0
BLOCK_PRIORITY = 50
HEAD_PRIORITY = 100
#: Category of parameters no detector claims.
OTHER = "other"

Predicate = Callable[[nn.Module, str], bool]


@dataclass(frozen=True)
class Detector:
    """Puts modules for which ``predicate(module, qualified_name)`` is true in ``category``."""

    name: str
    category: str
    predicate: Predicate
    priority: int = LAYER_PRIORITY
    description: str = ""

    def matches(self, module: nn.Module, qualified_name: str) -> bool:
        """Whether this detector claims ``module``."""
        return bool(self.predicate(module, qualified_name))


def by_type(
    name: str,
    category: str,
    types: type | tuple[type, ...],
    *,
    priority: int = LAYER_PRIORITY,
    where: Callable[[nn.Module], bool] | None = None,
    description: str = "",
) -> Detector:
    """A detector matching instances of ``types`` (optionally only those for which ``where`` holds)."""

    def predicate(module: nn.Module, _qualified_name: str) -> bool:
        return isinstance(module, types) and (where is None or where(module))

    return Detector(name=name, category=category, predicate=predicate, priority=priority, description=description)
