"""modprune-tokenc3-lsnet: the TokenC3-LSNet P2 detector (a YOLOv13 / LSNet hybrid) for ultralytics 8.4.

Public API:

- :func:`build_model` (``modprune_tokenc3_lsnet.model``): build the model as an ultralytics
  ``DetectionModel`` from a shipped config name, a yaml path or a dict.
- :func:`activate` / :func:`deactivate` / :func:`activated` (``modprune_tokenc3_lsnet.activate``): let
  ``ultralytics.YOLO("yolov13n_lsnet_p2_simple.yaml")`` and the trainer build it.
- :func:`load_fork_checkpoint` / :func:`fork_aliases` (``modprune_tokenc3_lsnet.compat``): load checkpoints
  pickled by the user's YOLOv13 fork.
- The blocks, in ``modprune_tokenc3_lsnet.blocks`` (stable import paths, stored in checkpoints).

Importing this package changes nothing in ultralytics and does not import it (names load on first
use, so modprune can load the plugin's entry point cheaply); call :func:`activate` to build models
through ``ultralytics.YOLO``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it (imported on first access)
_EXPORTS = {
    "activate": "activate",
    "activated": "activate",
    "deactivate": "activate",
    "is_active": "activate",
    "FORK_CLASS_PATHS": "compat",
    "fork_aliases": "compat",
    "load_fork_checkpoint": "compat",
    "load_fork_model": "compat",
    "is_fork_checkpoint": "compat",
    "DEFAULT_CFG": "model",
    "build_model": "model",
    "CFG_DIR": "parse",
    "PLUGIN_LAYERS": "parse",
    "parse_model": "parse",
}

__all__ = sorted(_EXPORTS)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
