"""modprune-tokenc3-lsnet: the TokenC3-LSNet P2 detector (a YOLOv13 / LSNet hybrid) for ultralytics 8.4.

Public API:

- :func:`build_model` (``modprune_tokenc3_lsnet.model``): build the model as an ultralytics
  ``DetectionModel`` from a shipped config name, a yaml path or a dict.
- :func:`activate` / :func:`deactivate` / :func:`activated` (``modprune_tokenc3_lsnet.activate``): let
  ``ultralytics.YOLO("yolov13n_lsnet_p2_simple.yaml")`` and the trainer build it.
- :func:`load_fork_checkpoint` / :func:`fork_aliases` (``modprune_tokenc3_lsnet.compat``): load checkpoints
  pickled by the user's YOLOv13 fork.
- The blocks, in ``modprune_tokenc3_lsnet.blocks`` (stable import paths, stored in checkpoints).

Importing this package changes nothing in ultralytics; call :func:`activate` for that.
"""

from __future__ import annotations

from modprune_tokenc3_lsnet.activate import activate, activated, deactivate, is_active
from modprune_tokenc3_lsnet.compat import FORK_CLASS_PATHS, fork_aliases, load_fork_checkpoint
from modprune_tokenc3_lsnet.model import DEFAULT_CFG, build_model
from modprune_tokenc3_lsnet.parse import CFG_DIR, PLUGIN_LAYERS, parse_model

__all__ = [
    "CFG_DIR",
    "DEFAULT_CFG",
    "FORK_CLASS_PATHS",
    "PLUGIN_LAYERS",
    "activate",
    "activated",
    "build_model",
    "deactivate",
    "fork_aliases",
    "is_active",
    "load_fork_checkpoint",
    "parse_model",
]

__version__ = "0.1.0"
