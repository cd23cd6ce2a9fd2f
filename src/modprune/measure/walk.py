"""Walking a model: calling it on example inputs, and the parameters its forward sees."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["call_model", "effective_parameters", "tensors_of"]


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model(*x)`` for tuples and lists, ``model(**x)`` for dicts, else ``model(x)``."""
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def tensors_of(value: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) tuple / list / dict model output, in order (dicts by value order)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_of(item)]
    return []


def effective_parameters(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(qualified name, tensor)`` of every parameter as the forward sees it.

    Parametrized tensors (e.g. masked weights) are evaluated, under their public name
    (``conv.weight``); the parametrization's internal ``original`` tensors are skipped.
    Shared tensors come once.
    """
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList) or ".parametrizations." in f".{name}.":
            continue
        prefix = f"{name}." if name else ""
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                key = id(module.parametrizations[attr].original)
                if key not in seen:
                    seen.add(key)
                    yield prefix + attr, getattr(module, attr)
        for pname, param in module.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                yield prefix + pname, param
