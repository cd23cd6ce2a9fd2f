"""Every change modprune makes to torch-pruning's behaviour, applied only while modprune prunes.

torch-pruning refreshes the concat / split / reshape index mappings of the *whole* graph each time
it builds a pruning group (``index_mapping.update_index_mapping``, about 60 ms per call on
yolo12n), and rebuilds every group each time a pruner step asks for them
(``DependencyGraph.get_all_groups``). While modprune only plans (a search trying many scales on one
unpruned model), neither can change, so inside :func:`frozen_graph`:

* ``torch_pruning.dependency.index_mapping.update_index_mapping`` skips the frozen graph (every
  other graph is refreshed as usual);
* the frozen graph's ``get_all_groups`` (an attribute of that one instance) returns the groups built
  on its first call, kept in a :class:`GroupCache` until the caller clears it.

:func:`patched_torch_pruning` installs the module-level replacement and puts back the original
object it found when the outermost ``with`` exits (also on an exception); nesting and several frozen graphs
at once are fine. Outside these contexts torch-pruning is exactly as imported.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from torch_pruning.dependency import index_mapping as tp_index_mapping

__all__ = ["GroupCache", "frozen_graph", "patched_torch_pruning"]

log = logging.getLogger(__name__)

_lock = threading.RLock()
_depth = 0
_original: Callable[[Any], None] = tp_index_mapping.update_index_mapping
#: id(graph) -> how many nested :func:`frozen_graph` contexts hold it.
_frozen: dict[int, int] = {}


def _update_index_mapping(graph: Any) -> None:
    """torch-pruning's refresh, except for frozen graphs."""
    if id(graph) not in _frozen:
        _original(graph)


@contextlib.contextmanager
def patched_torch_pruning() -> Iterator[None]:
    """Install modprune's index-mapping replacement for the duration of the ``with`` (re-entrant).

    With no graph frozen the replacement calls torch-pruning's own function, so wrapping more code
    than needed changes nothing.
    """
    global _depth, _original
    with _lock:
        if _depth == 0:
            _original = tp_index_mapping.update_index_mapping
            tp_index_mapping.update_index_mapping = _update_index_mapping
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if tp_index_mapping.update_index_mapping is not _update_index_mapping:
                    log.warning("torch_pruning's update_index_mapping was replaced while modprune pruned; restoring it")
                tp_index_mapping.update_index_mapping = _original  # the object found on entry


@dataclass
class GroupCache:
    """The full groups of one frozen graph, built once; :meth:`clear` when the model changes."""

    groups: list[Any] | None = None

    def clear(self) -> None:
        """Forget the groups (the next ``get_all_groups`` builds them again)."""
        self.groups = None


def _caching_get_all_groups(original: Callable[..., Any], cache: GroupCache) -> Callable[..., Iterator[Any]]:
    def get_all_groups(ignored_layers: Any = (), root_module_types: Any = ()) -> Iterator[Any]:
        if cache.groups is None:
            cache.groups = list(original(ignored_layers=ignored_layers, root_module_types=root_module_types))
        return iter(cache.groups)

    return get_all_groups


@contextlib.contextmanager
def frozen_graph(graph: Any, cache: GroupCache) -> Iterator[None]:
    """While the model does not change: no index-mapping refreshes for ``graph`` and its full groups
    built once (into ``cache``). A nested ``frozen_graph`` of the same graph changes nothing more."""
    key = id(graph)
    with patched_torch_pruning():
        with _lock:
            outermost = key not in _frozen
            _frozen[key] = _frozen.get(key, 0) + 1
        had_own = "get_all_groups" in vars(graph)
        previous = vars(graph).get("get_all_groups")
        if outermost:
            graph.get_all_groups = _caching_get_all_groups(graph.get_all_groups, cache)
        try:
            yield
        finally:
            if outermost:
                if had_own:
                    graph.get_all_groups = previous
                else:
                    del graph.get_all_groups
            with _lock:
                _frozen[key] -= 1
                if not _frozen[key]:
                    del _frozen[key]
