"""Stock ``YOLO("pruned.pt").train()`` must not silently train the unpruned network.

ultralytics' ``Model.train`` rebuilds the network from the yaml the checkpoint carries (``model.yaml``) and
copies over the weights whose shapes still match. For a pruned model that yaml describes the dense widths, so
training would quietly start from a larger, partly random network ("Transferred 95/355").

A checkpoint whose network differs from what its yaml builds is therefore saved with its yaml *marked*:
``scale`` names :data:`~modprune.model_yaml.PRUNED_SCALE`, a sentence saying how to train the model, and the
yaml keeps what it had under ``modprune_pruned`` (:func:`modprune.model_yaml.marked_cfg`). ultralytics' parser
looks the scale up first, so the rebuild stops at once with ``KeyError: 'pruned by modprune: ...'``; nothing
else in ultralytics reads ``scale`` (loading, validation, prediction and export work as before).
``modprune.model_yaml.dense_cfg`` gives the unmarked yaml back to code that means to build the dense network
(the thin baseline, for instance).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Iterator

import torch
from torch import nn

from modprune.model_yaml import dense_cfg, is_marked, marked_cfg

__all__ = ["marked_yaml", "rebuild_differs"]

log = logging.getLogger(__name__)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _rebuild(model: nn.Module, cfg: dict[str, Any], device: str) -> nn.Module:
    from modprune.integrations.ultralytics.checkpoint import restricted_parse  # noqa: PLC0415
    from modprune.integrations.ultralytics.validate import quiet_ultralytics  # noqa: PLC0415

    with quiet_ultralytics(), restricted_parse(), torch.device(device):
        return type(model)(copy.deepcopy(cfg), ch=int(cfg.get("channels", 3)), nc=cfg.get("nc"), verbose=False)


def rebuild_differs(model: nn.Module) -> bool:
    """Whether building ``type(model)`` from its (dense) yaml gives other tensor names or shapes than
    ``model`` has: True as well when the yaml cannot be built here (the model cannot be shown to match)."""
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict):
        return False
    cfg = dense_cfg(cfg)
    for device in ("meta", "cpu"):  # meta: shapes only, no memory or initialisation cost
        try:
            rebuilt = _rebuild(model, cfg, device)
        except Exception as exc:  # noqa: BLE001 - ultralytics' builder raises many types
            log.debug("rebuilding %s from its yaml on %s failed: %s: %s", type(model).__name__, device,
                      type(exc).__name__, exc)
            continue
        return _shapes(rebuilt) != _shapes(model)
    return True


@contextlib.contextmanager
def marked_yaml(model: nn.Module, differs: bool | None = None) -> Iterator[bool]:
    """While saving: ``model.yaml`` is the marked copy if the network differs from what the yaml builds
    (``differs``, else :func:`rebuild_differs`); yields whether the saved yaml is marked. The model's own
    yaml is put back afterwards."""
    cfg = model.__dict__.get("yaml")
    if not isinstance(cfg, dict) or is_marked(cfg) or not (rebuild_differs(model) if differs is None else differs):
        yield is_marked(cfg)
        return
    model.yaml = marked_cfg(cfg)
    try:
        yield True
    finally:
        model.yaml = cfg
