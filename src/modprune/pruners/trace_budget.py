"""A time budget on building torch-pruning's dependency graph.

Tracing some blocks (attention reshaped into heads, long chains of concatenations) can make
torch-pruning's graph or its pruning groups grow for many minutes. Inside :func:`time_budget` the
graph's hot spots check a deadline: every module's forward while the model is traced, every edge
added to the graph (``Node.add_input``) and every dependency added to a pruning group
(``Group.add_dep``). Past the deadline they raise :class:`BudgetExceeded` from inside torch-pruning,
so the caller can name the module it was working on (see
:func:`modprune.pruners.structured_setup.unsupported_from`) and stop with a clear message.

The patches are installed only for the duration of the ``with`` (re-entrant, restored on exit) and
cost one clock read per call.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

from torch import nn
from torch_pruning.dependency.group import Group
from torch_pruning.dependency.node import Node

__all__ = ["BudgetExceeded", "block_of", "time_budget"]

_lock = threading.RLock()
#: Active deadlines (monotonic seconds), innermost last.
_deadlines: list[float] = []
#: The budgets (seconds) of those deadlines, for the message.
_budgets: list[float] = []
_originals: dict[tuple[type, str], Callable[..., Any]] = {}
_PATCHED = ((Node, "add_input"), (Group, "add_dep"))


class BudgetExceeded(RuntimeError):
    """Raised inside torch-pruning when the innermost :func:`time_budget` ran out."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"dependency graph not built within {seconds:g} s")
        self.seconds = seconds


def _check() -> None:
    if _deadlines and time.monotonic() > _deadlines[-1]:
        raise BudgetExceeded(_budgets[-1])


def _checked(original: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        _check()
        return original(self, *args, **kwargs)

    method.__wrapped__ = original  # type: ignore[attr-defined]
    return method


@contextlib.contextmanager
def time_budget(model: nn.Module, seconds: float | None) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` from inside tracing once ``seconds`` have passed (None: no limit)."""
    if seconds is None:
        yield
        return
    handles = [m.register_forward_pre_hook(lambda *_: _check()) for m in model.modules()]
    with _lock:
        if not _deadlines:
            for owner, name in _PATCHED:
                _originals[(owner, name)] = getattr(owner, name)
                setattr(owner, name, _checked(_originals[(owner, name)]))
        _deadlines.append(time.monotonic() + seconds)
        _budgets.append(seconds)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        with _lock:
            _deadlines.pop()
            _budgets.pop()
            if not _deadlines:
                for (owner, name), original in _originals.items():
                    setattr(owner, name, original)
                _originals.clear()


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def block_of(model: nn.Module, name: str) -> str:
    """The top-level block holding module ``name``: its outermost ancestor that is not a plain
    container (``model.10`` in an ultralytics model, ``blocks.3`` in a timm ViT); ``name`` itself
    when no such ancestor exists."""
    parts = name.split(".") if name else []
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        try:
            module = model.get_submodule(prefix)
        except AttributeError:
            return name
        if not isinstance(module, _CONTAINERS):
            return prefix
    return name
