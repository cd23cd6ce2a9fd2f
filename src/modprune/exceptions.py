"""Every error modprune raises on bad input derives from :class:`ModpruneError`.

Errors carry the offending object (``.obj``) and a message that says what to do.
The CLI turns a ``ModpruneError`` into exit code 2 and one readable line.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = [
    "ModpruneError",
    "ConfigError",
    "UnknownStrategyError",
    "DuplicateStrategyError",
    "UnreachableTargetError",
    "ModelLoadError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "TraceTimeoutError",
    "OutputPathError",
    "DatasetError",
    "PluginError",
    "DiskError",
    "MissingDependencyError",
]


class ModpruneError(Exception):
    """Base of every user-facing error raised by modprune.

    ``obj`` is the offending value (a name, a path, a module...), kept for programmatic use.
    """

    def __init__(self, message: str, obj: Any = None) -> None:
        super().__init__(message)
        self.obj = obj


class ConfigError(ModpruneError, ValueError):
    """A configuration value or key is invalid."""


class UnknownStrategyError(ModpruneError, KeyError):
    """A strategy name is not registered; the message lists the valid ones."""

    def __init__(self, family: str, name: str, valid: Iterable[str]) -> None:
        valid = sorted(valid)
        super().__init__(
            f"unknown {family} {name!r}; valid {family}s: {', '.join(valid) or '(none registered)'}",
            obj=name,
        )
        self.family = family
        self.valid = valid

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateStrategyError(ModpruneError):
    """Two plugins registered the same strategy name in one family."""


class UnreachableTargetError(ModpruneError, ValueError):
    """The requested target cannot be reached (e.g. too much of the model is protected)."""


class ModelLoadError(ModpruneError):
    """A model file is missing, corrupt, or of a kind modprune cannot read."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint needs arbitrary pickle code to load and the user did not opt in."""


class UnsupportedModelError(ModpruneError):
    """The model (or one of its modules) cannot be pruned as asked; the message names the module."""


class TraceTimeoutError(UnsupportedModelError):
    """Building the dependency graph ran past its time budget; the message names the block it was in
    (``obj``: its qualified name) and says how to protect it or raise the budget."""


class OutputPathError(ModpruneError):
    """An output path is unwritable or would overwrite an input."""


class DatasetError(ModpruneError):
    """A dataset is missing, empty or malformed."""


class PluginError(ModpruneError):
    """A plugin failed when modprune called one of its hooks; the message names the plugin and hook.

    ``plugin`` is the plugin's registered name, ``hook`` the hook (or layer-pruner method) that raised.
    """

    def __init__(self, message: str, obj: Any = None, *, plugin: str = "", hook: str = "") -> None:
        super().__init__(message, obj)
        self.plugin = plugin
        self.hook = hook


class DiskError(OutputPathError):
    """Writing an output failed because the disk is full, read-only or not writable by this user."""


class MissingDependencyError(ModpruneError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra to install."""
