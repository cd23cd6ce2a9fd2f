"""Build a TokenC3-LSNet model as a plain ``ultralytics.nn.tasks.DetectionModel``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics.nn.tasks import DetectionModel

from modprune_tokenc3_lsnet.activate import activated
from modprune_tokenc3_lsnet.parse import load_cfg

__all__ = ["DEFAULT_CFG", "build_model"]

#: The user's config, by the name that selects scale n.
DEFAULT_CFG = "yolov13n_lsnet_p2_simple.yaml"


def build_model(
    cfg: str | Path | dict[str, Any] = DEFAULT_CFG, ch: int = 3, nc: int | None = None, verbose: bool = False
) -> DetectionModel:
    """Build the model described by ``cfg`` (a shipped config name, a yaml path or a model dict).

    The result is an ordinary ultralytics ``DetectionModel`` (strides, ``save``, ``names``, ``yaml``
    set; BatchNorm eps 1e-3 / momentum 0.03; Detect biases initialised), so ultralytics' trainer,
    validator and predictor accept it. Activates the plugin for the duration of the call only.
    """
    d = load_cfg(cfg)
    with activated():
        return DetectionModel(d, ch=ch, nc=nc, verbose=verbose)
