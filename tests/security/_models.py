"""Module classes for the loading tests (importable by name, so pickles can refer to them)."""

from __future__ import annotations

import torch
from torch import nn

#: Calls of code that restricted loading must never run.
CALLS: list[str] = []


class Block(nn.Module):
    """A third-party-style block (not allowlisted): files modprune wrote declare it."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.scale = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale


class Sentinel(nn.Module):
    """Allowlisted in the tests; its __init__ and __setstate__ record that they ran."""

    def __init__(self) -> None:
        CALLS.append("__init__")
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def __setstate__(self, state: dict) -> None:
        CALLS.append("__setstate__")
        super().__setstate__(state)


class SentinelNew(nn.Module):
    """Allowlisted in the tests, with a Python __new__."""

    def __new__(cls, *args: object, **kwargs: object) -> "SentinelNew":
        CALLS.append("__new__")
        return super().__new__(cls)


class SentinelList(nn.ModuleList):
    """Allowlisted in the tests, with its own append."""

    def append(self, module: nn.Module) -> "SentinelList":
        CALLS.append("append")
        return super().append(module)


def sentinel_function(*args: object) -> None:
    """A function a hostile pickle names."""
    CALLS.append("sentinel_function")
