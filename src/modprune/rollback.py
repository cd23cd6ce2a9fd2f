"""Undo a failed prune: put the caller's model back exactly as it was.

:func:`snapshot` deep-copies a model and remembers its module and parameter objects by name;
:meth:`Snapshot.restore` writes the copy's structure and state back into those same objects, so
references the caller holds (to the model, a submodule or a parameter in an optimizer) stay valid and
see the pre-prune values: every module gets its old attributes, children, buffers and flags back, and
every parameter its old tensor and ``requires_grad``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

from torch import nn

__all__ = ["Snapshot", "snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A deep copy of a model and the original module / parameter objects by qualified name."""

    copy: nn.Module
    modules: dict[str, nn.Module]
    parameters: dict[str, nn.Parameter]

    def restore(self, model: nn.Module) -> None:
        """Write the snapshot back into ``model`` (the object :func:`snapshot` was given), in place."""
        copies = dict(self.copy.named_modules(remove_duplicate=False))
        for name, original in self.modules.items():
            twin = copies[name]
            state = dict(vars(twin))
            state["_modules"] = {
                key: (self.modules[_join(name, key)] if child is not None else None)
                for key, child in twin._modules.items()
            }
            state["_parameters"] = {
                key: self._parameter(_join(name, key), value) for key, value in twin._parameters.items()
            }
            original.__dict__.clear()
            original.__dict__.update(state)
            if type(original) is not type(twin):  # e.g. a parametrization added, which swaps the class
                original.__class__ = type(twin)

    def _parameter(self, name: str, value: nn.Parameter | None) -> nn.Parameter | None:
        original = self.parameters.get(name)
        if value is None or original is None:
            return value
        original.data = value.data
        original.requires_grad_(value.requires_grad)
        original.grad = value.grad
        return original


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def snapshot(model: nn.Module) -> Snapshot | None:
    """A snapshot of ``model`` (doubles its memory for the duration of the prune); None, with a
    warning, when the model cannot be deep-copied."""
    try:
        twin = copy.deepcopy(model)
    except Exception as exc:  # a model may hold anything that refuses to be copied
        log.warning(
            "the model cannot be copied (%s: %s); a prune that fails part-way may leave it modified",
            type(exc).__name__,
            exc,
        )
        return None
    modules = dict(model.named_modules(remove_duplicate=False))
    parameters = dict(model.named_parameters(remove_duplicate=False))
    return Snapshot(twin, modules, parameters)
