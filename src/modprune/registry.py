"""One registry per strategy family, with ``register`` / ``get`` / ``list`` verbs."""

from __future__ import annotations

import logging
from typing import Generic, Iterator, TypeVar

from modprune.exceptions import DuplicateStrategyError, UnknownStrategyError

__all__ = ["Registry"]

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
