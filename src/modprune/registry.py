"""One registry per strategy family, with ``register`` / ``get`` / ``list`` verbs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Generic, Iterator, TypeVar

from modprune.exceptions import DuplicateStrategyError, ModpruneError, UnknownStrategyError

__all__ = ["LayerPrunerRegistry", "Registry"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    """Named strategies of one family (detectors, importances, pruners, recipes).

    Each entry remembers which plugin registered it (``source``), so errors can name it.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def register(self, name: str, item: T, *, source: str = "<direct>") -> None:
        """Add ``item`` under ``name``; a name already taken raises :class:`DuplicateStrategyError`."""
        if not isinstance(name, str) or not name:
            raise DuplicateStrategyError(f"{self.family} registered by {source} has no valid name: {name!r}", item)
        if name in self._items:
            raise DuplicateStrategyError(
                f"{self.family} {name!r} registered by {source} is already registered by "
                f"{self._sources[name]}; rename one of them or uninstall one plugin",
                name,
            )
        self._items[name] = item
        self._sources[name] = source

    def get(self, name: str) -> T:
        """The item registered under ``name``; unknown names raise an error listing valid ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownStrategyError(self.family, name, self._items) from None

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, item)`` pairs, sorted by name."""
        return [(name, self._items[name]) for name in self.list()]

    def source(self, name: str) -> str:
        """The plugin that registered ``name``."""
        self.get(name)
        return self._sources[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.list()})"


def _type_name(module_type: type) -> str:
    return f"{module_type.__module__}.{module_type.__qualname__}"


class LayerPrunerRegistry(Mapping[type, Any]):
    """torch-pruning layer pruners by module type (``modprune_register_layer_pruners``).

    Read like a mapping ``{module_type: pruner}``; ``register`` / ``get`` / ``list`` / ``items`` /
    ``source`` like :class:`Registry`. Every entry is a ``torch_pruning`` ``BasePruningFunc``
    instance keyed by a class (torch-pruning is imported when the first entry is registered).
    """

    family = "layer pruner"

    def __init__(self) -> None:
        self._items: dict[type, Any] = {}
        self._sources: dict[type, str] = {}

    def register(self, module_type: type, pruner: Any, *, source: str = "<direct>") -> None:
        """Add ``pruner`` for ``module_type``.

        :raises ModpruneError: ``module_type`` is not a class or ``pruner`` not a ``BasePruningFunc``.
        :raises DuplicateStrategyError: the type already has a layer pruner.
        """
        from torch_pruning.pruner.function import BasePruningFunc  # noqa: PLC0415 - heavy import

        if not isinstance(module_type, type):
            raise ModpruneError(
                f"layer pruner registered by {source} is keyed by {module_type!r}, not a module class", source
            )
        if not isinstance(pruner, BasePruningFunc):
            raise ModpruneError(
                f"layer pruner for {module_type.__name__} registered by {source} is {pruner!r}, not a "
                "torch_pruning.pruner.function.BasePruningFunc instance",
                source,
            )
        if module_type in self._items:
            raise DuplicateStrategyError(
                f"layer pruner for {module_type.__name__} registered by {source} is already registered by "
                f"{self._sources[module_type]}; uninstall one plugin",
                module_type,
            )
        self._items[module_type] = pruner
        self._sources[module_type] = source

    def get(self, module_type: type) -> Any:
        """The layer pruner of ``module_type``; unknown types raise an error listing the valid ones."""
        try:
            return self._items[module_type]
        except (KeyError, TypeError):
            name = getattr(module_type, "__name__", repr(module_type))
            raise UnknownStrategyError(self.family, name, [t.__name__ for t in self.list()]) from None

    def list(self) -> list[type]:
        """Module types with a layer pruner, sorted by qualified name."""
        return sorted(self._items, key=_type_name)

    def items(self) -> list[tuple[type, Any]]:  # type: ignore[override]
        """``(module_type, pruner)`` pairs, sorted like :meth:`list`."""
        return [(t, self._items[t]) for t in self.list()]

    def source(self, module_type: type) -> str:
        """The plugin that registered the layer pruner of ``module_type``."""
        self.get(module_type)
        return self._sources[module_type]

    def __getitem__(self, module_type: type) -> Any:
        return self._items[module_type]

    def __iter__(self) -> Iterator[type]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"LayerPrunerRegistry({[t.__name__ for t in self.list()]})"
