"""Optional dependencies: which extra provides which package, and one error that says what to install."""

from __future__ import annotations

import importlib.util
import sys

from modprune.exceptions import MissingDependencyError

__all__ = ["EXTRAS", "available", "require", "missing_dependency_error"]

#: Importable top-level package -> the modprune extra that installs it.
EXTRAS: dict[str, str] = {
    "ultralytics": "ultralytics",
    "torchvision": "ultralytics",
    "PIL": "data",
    "matplotlib": "plots",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "optuna": "search",
    "timm": "timm",
}


def available(package: str) -> bool:
    """Whether ``package`` (a top-level import name) can be imported, without importing it."""
    if package in sys.modules:
        return sys.modules[package] is not None
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def missing_dependency_error(package: str, purpose: str) -> MissingDependencyError:
    """The error for ``purpose`` needing ``package``, naming the extra that installs it."""
    extra = EXTRAS.get(package)
    how = f"pip install 'modprune[{extra}]'" if extra else f"pip install {package}"
    return MissingDependencyError(f"{purpose} needs {package}, which is not installed: {how}", obj=package)


def require(package: str, purpose: str) -> None:
    """Raise :class:`MissingDependencyError` unless ``package`` is importable.

    :param package: top-level import name (``"ultralytics"``, ``"PIL"``...).
    :param purpose: what needs it, e.g. ``"modprune data synth"``; starts the message.
    """
    if not available(package):
        raise missing_dependency_error(package, purpose)
