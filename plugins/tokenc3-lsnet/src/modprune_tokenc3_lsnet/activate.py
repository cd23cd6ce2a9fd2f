"""Let ultralytics build TokenC3-LSNet models: :func:`activate` / :func:`deactivate`.

While active:

- ``ultralytics.nn.tasks.parse_model`` (a module global, looked up by ultralytics at call time by every
  construction path: ``YOLO(yaml)``, ``DetectionModel(cfg)``, the trainer's ``get_model``) is wrapped:
  a model dict naming any of this plugin's layers (:data:`~modprune_tokenc3_lsnet.parse.PLUGIN_LAYERS`)
  goes to :func:`modprune_tokenc3_lsnet.parse.parse_model`, everything else to the original, unchanged.
- ``yaml_model_load`` (in ``ultralytics.nn.tasks`` and ``ultralytics.engine.model``) is wrapped so a bare
  name of a shipped config (``yolov13n_lsnet_p2_simple.yaml``, ``yolov13s-tokenc3-lsnet-p2.yaml``, ...)
  resolves to the file in this package, with the scale taken from the requested name. A file that exists
  as given, and every other name, goes to the original.

``activate()`` is idempotent; ``deactivate()`` undoes it. :func:`activated` is a context manager that
activates for its body and restores the previous state. Written against ultralytics 8.4.x.

The DDP trainer re-parses the yaml in a fresh interpreter; that process must import and activate the
plugin too (e.g. through a trainer subclass or callback defined in the plugin).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modprune_tokenc3_lsnet import parse

__all__ = ["activate", "activated", "deactivate", "is_active"]

log = logging.getLogger(__name__)

_LOCK = threading.RLock()
_MARK = "__modprune_tokenc3_lsnet_wrapper__"
# (module name, attribute) pairs this module wraps.
_TARGETS: tuple[tuple[str, str], ...] = (
    ("ultralytics.nn.tasks", "parse_model"),
    ("ultralytics.nn.tasks", "yaml_model_load"),
    ("ultralytics.engine.model", "yaml_model_load"),
)


class _Patch:
    """One installed wrapper: where it lives, what it replaced, and whether it still dispatches."""

    def __init__(self, module: Any, attr: str, original: Callable[..., Any], wrapper: Callable[..., Any]) -> None:
        self.module, self.attr, self.original, self.wrapper = module, attr, original, wrapper
        self.enabled = True

    def remove(self) -> None:
        """Restore the original, or disable the wrapper if something else has wrapped it since."""
        self.enabled = False
        if getattr(self.module, self.attr) is self.wrapper:
            setattr(self.module, self.attr, self.original)
        else:
            log.warning(
                "%s.%s was re-wrapped after activate(); leaving the chain in place (this plugin's layer passes through)",
                self.module.__name__,
                self.attr,
            )


_patches: list[_Patch] = []


def _wrap_parse_model(original: Callable[..., Any], patch_ref: list[_Patch]) -> Callable[..., Any]:
    """Return a parse_model that routes plugin yamls to the plugin's parser."""

    @functools.wraps(original)
    def parse_model(d: dict[str, Any], ch: int, verbose: bool = True) -> Any:
        if patch_ref[0].enabled and parse.uses_plugin_modules(d):
            return parse.parse_model(d, ch, verbose=verbose)
        return original(d, ch, verbose=verbose)

    return parse_model


def _wrap_yaml_model_load(original: Callable[..., Any], patch_ref: list[_Patch]) -> Callable[..., Any]:
    """Return a yaml_model_load that finds the plugin's shipped configs by bare name."""

    @functools.wraps(original)
    def yaml_model_load(path: str | Path) -> dict[str, Any]:
        if patch_ref[0].enabled and parse.find_plugin_cfg(path) is not None:
            return parse.load_cfg(path)
        return original(path)

    return yaml_model_load


def _install(module_name: str, attr: str) -> _Patch:
    """Wrap ``module_name.attr`` and return the patch record."""
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    factory = _wrap_parse_model if attr == "parse_model" else _wrap_yaml_model_load
    ref: list[_Patch] = []
    wrapper = factory(original, ref)
    setattr(wrapper, _MARK, True)
    patch = _Patch(module, attr, original, wrapper)
    ref.append(patch)
    setattr(module, attr, wrapper)
    return patch


def is_active() -> bool:
    """Return True while the plugin takes part in ultralytics model building."""
    return bool(_patches)


def activate() -> None:
    """Make ultralytics build TokenC3-LSNet models from yamls that name this plugin's layers.

    Idempotent. Stock yamls keep building exactly as before. See the module docstring for details.
    """
    with _LOCK:
        if _patches:
            return
        _patches.extend(_install(module, attr) for module, attr in _TARGETS)
        log.debug("modprune-tokenc3-lsnet activated")


def deactivate() -> None:
    """Undo :func:`activate` (no-op when not active)."""
    with _LOCK:
        while _patches:
            _patches.pop().remove()
        log.debug("modprune-tokenc3-lsnet deactivated")


@contextlib.contextmanager
def activated() -> Iterator[None]:
    """Activate for the body of a ``with`` block; leave it active afterwards only if it was before."""
    with _LOCK:
        was_active = is_active()
        activate()
    try:
        yield
    finally:
        if not was_active:
            deactivate()
