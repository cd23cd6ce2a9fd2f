"""The built-in ultralytics plugin: detectors, model preparation, loading and saving.

Registered only when ultralytics is installed. Importing this module does not import
ultralytics; each hook does so when called (model hooks only once ultralytics is already in
``sys.modules``, since a model cannot hold ultralytics modules before that). Building a plugin
manager calls :func:`modprune_register_safe_globals`, which imports ultralytics' ``nn`` package
(the weights-only allowlist needs the class objects).

What the hooks do:

* detectors: ``detect_head`` (Detect and subclasses, head priority), ``attention`` (Attention, AAttn,
  PSABlock, ABlock, MaxSigmoidAttnBlock, block priority), ``dfl``;
* ``modprune_unwrap_model``: a ``YOLO`` object is pruned through its ``.model`` (in place);
* ``modprune_prepare_model``: refuses RT-DETR, YOLO-World and YOLOE models (:data:`UNTRACEABLE`) in one
  line; C2f / C3k2 / C2 / C2PSA / PSA / RepNCSPELAN4 / ELAN1 become split blocks
  with identical outputs (:mod:`~modprune.integrations.ultralytics.rewrite`);
* ``modprune_protected_modules``: each head branch's final conv (4 * reg_max box bins, nc classes, mask
  / keypoint / angle outputs), DFL, the mask prototypes' last conv, and attention modules (their
  channels are reshaped into heads, which torch-pruning cannot slice consistently; building a group
  through yolo11's C2PSA attention also ran away in memory);
* ``modprune_resizable_outputs``: the neck maps a head returns beside its predictions (``feats``), whose
  widths pruning may change;
* ``modprune_unwrapped_parameters``: A2C2f's residual ``gamma`` (one value per output channel);
* ``modprune_attention_heads``: the head layouts of Attention and AAttn (pruned by heads / head dimensions
  inside, their outer widths protected as above; :mod:`~modprune.integrations.ultralytics.heads`);
* ``modprune_finalize_model``: refresh the split blocks' stored widths;
* ``modprune_equal_width_layers``: the two first convolutions of each split block, kept equal with
  ``pruner_options: {portable: true}`` so the block is saved as its ultralytics class;
* ``modprune_fusable_pairs``: the conv and BatchNorm of every ``Conv`` block (for ``modprune.fuse``);
* ``modprune_removable_blocks``: every ``Bottleneck`` with a shortcut (for the ``depth`` pruner);
* ``modprune_load_model`` / ``modprune_save_model``: checkpoints and yamls
  (:mod:`~modprune.integrations.ultralytics.checkpoint`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modprune.config import PruneConfig
from modprune.detectors.base import Detector
from modprune.exceptions import UnsupportedModelError
from modprune.hookspecs import hookimpl
from modprune.integrations.ultralytics import checkpoint, detectors
from modprune.integrations.ultralytics.blocks import SplitBlock

log = logging.getLogger(__name__)


@hookimpl
def modprune_register_detectors() -> list[Detector]:
    return detectors.detectors()


def _offline() -> None:
    """Before this plugin imports ultralytics: no network checks, font downloads or auto-installs."""
    from modprune.integrations.ultralytics.offline import ensure_offline  # noqa: PLC0415

    ensure_offline()


@hookimpl
def modprune_register_safe_globals() -> list[type]:
    _offline()
    return checkpoint.safe_classes()


@hookimpl
def modprune_register_model_modules() -> list[type]:
    _offline()
    return checkpoint.yaml_modules()


#: ultralytics model classes structured pruning refuses up front, and why (their heads take inputs
#: torch-pruning cannot trace: RT-DETR's query decoder, the text embeddings of YOLO-World and YOLOE).
UNTRACEABLE = {
    "RTDETRDetectionModel": "its transformer decoder (query selection, deformable attention)",
    "WorldModel": "its text-embedding inputs (C2fAttn / ImagePoolingAttn guides, contrastive head)",
    "YOLOEModel": "its text/visual prompt-embedding inputs (contrastive head)",
}


def _refuse_untraceable(model: nn.Module) -> None:
    from ultralytics.nn import tasks  # noqa: PLC0415

    for name, why in UNTRACEABLE.items():
        cls = getattr(tasks, name, None)
        if isinstance(cls, type) and isinstance(model, cls):
            raise UnsupportedModelError(
                f"structured pruning of ultralytics {type(model).__name__} models is not supported: torch-pruning "
                f"cannot trace {why}; use method 'unstructured' for this model",
                model,
            )


@hookimpl
def modprune_unwrap_model(model: Any) -> nn.Module | None:
    """An ultralytics ``Model`` (``YOLO(...)``) is pruned through its ``.model``; its own ``train()`` would
    start a training run (and a dataset download) if pruning called it."""
    engine = sys.modules.get("ultralytics.engine.model")
    if engine is None or not isinstance(model, engine.Model):
        return None
    inner = getattr(model, "model", None)
    if not isinstance(inner, nn.Module):
        from modprune.exceptions import UnsupportedModelError  # noqa: PLC0415

        raise UnsupportedModelError(f"this {type(model).__name__} object holds no loaded network to prune "
                                    f"(its model is {type(inner).__name__}); load weights or a yaml first", model)
    return inner


@hookimpl
def modprune_prepare_model(model: nn.Module, config: PruneConfig) -> None:
    if "ultralytics" not in sys.modules:
        return
    from modprune.integrations.ultralytics.rewrite import rewrite_blocks  # noqa: PLC0415

    _refuse_untraceable(model)  # before any rewrite: the model is left as it was

    done = rewrite_blocks(model)
    if done:
        log.info("rewrote %d ultralytics blocks into split blocks (same outputs)", len(done))


@hookimpl
def modprune_protected_modules(model: nn.Module) -> list[nn.Module]:
    protected = detectors.protected_modules(model)
    attention = detectors.attention_modules(model)
    if attention:
        log.info(
            "protecting the outer widths of %d ultralytics attention modules (pruned inside by heads, see "
            "pruner_options attention)",
            len(attention),
        )
    return protected


@hookimpl
def modprune_unwrapped_parameters(model: nn.Module) -> list[tuple[Any, int]]:
    if "ultralytics" not in sys.modules:
        return []
    from ultralytics.nn.modules.block import A2C2f  # noqa: PLC0415

    return [
        (m.gamma, 0)
        for m in model.modules()
        if isinstance(m, A2C2f) and isinstance(getattr(m, "gamma", None), nn.Parameter)
    ]


@hookimpl
def modprune_resizable_outputs(model: nn.Module, outputs: Any) -> list[Any]:
    """The neck maps an ultralytics head returns beside its predictions (``{"feats": [...]}`` in eval mode, for
    the loss): returning them does not fix their widths; the predictions' shapes stay fixed."""
    if "ultralytics" not in sys.modules or not isinstance(outputs, (tuple, list)):
        return []
    from ultralytics.nn.modules import Detect  # noqa: PLC0415

    if not any(isinstance(m, Detect) for m in model.modules()):
        return []
    extras = [o for o in outputs if isinstance(o, dict) and isinstance(o.get("feats"), (list, tuple))]
    return [t for extra in extras for t in extra["feats"] if isinstance(t, torch.Tensor)]


@hookimpl
def modprune_attention_heads(model: nn.Module) -> list[Any]:
    from modprune.integrations.ultralytics.heads import attention_heads  # noqa: PLC0415

    return attention_heads(model)


@hookimpl
def modprune_finalize_model(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, SplitBlock):
            module.update_widths()


@hookimpl
def modprune_equal_width_layers(model: nn.Module) -> list[tuple[nn.Module, ...]]:
    """Both first convolutions of each split block with an ultralytics class (``portable`` pruning)."""
    if "ultralytics" not in sys.modules:
        return []
    from modprune.integrations.ultralytics.portable import equal_width_pairs  # noqa: PLC0415

    return list(equal_width_pairs(model))


@hookimpl
def modprune_fusable_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The ``(conv, bn)`` of every ultralytics ``Conv`` (and subclass) that computes ``act(bn(conv(x)))``.

    Blocks overriding that forward (``Conv2``, ``RepConv``, ``ConvTranspose``) are left alone.
    """
    if "ultralytics" not in sys.modules:
        return []
    from ultralytics.nn.modules.conv import Conv  # noqa: PLC0415

    return [
        (m.conv, m.bn)
        for m in model.modules()
        if isinstance(m, Conv) and type(m).forward is Conv.forward
        and isinstance(getattr(m, "conv", None), nn.Conv2d) and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)
    ]


@hookimpl
def modprune_load_model(path: Path, trust_pickle: bool) -> nn.Module | None:
    _offline()
    return checkpoint.load_model(path, trust_pickle)


@hookimpl
def modprune_save_model(model: nn.Module, path: Path, metadata: dict[str, Any]) -> bool | None:
    if not checkpoint.is_ultralytics_model(model):
        return None
    checkpoint.save_checkpoint(model, path, metadata)
    return True


@hookimpl
def modprune_removable_blocks(model: nn.Module) -> list[Any]:
    """Every ultralytics ``Bottleneck`` (C2f, C3k2, C3, C3k and their subclasses hold them) whose forward is
    ``x + cv2(cv1(x))``: its ``add`` flag set (shortcut on and equal widths), the forward not overridden."""
    if "ultralytics" not in sys.modules:
        return []
    from ultralytics.nn.modules.block import Bottleneck  # noqa: PLC0415

    from modprune.pruners.depth_blocks import RemovableBlock  # noqa: PLC0415

    return [
        RemovableBlock(m, name, kind="residual", removal="identity")
        for name, m in model.named_modules()
        if name and isinstance(m, Bottleneck) and type(m).forward is Bottleneck.forward
        and bool(getattr(m, "add", False))
    ]
