"""modprune hooks of the TokenC3-LSNet plugin (entry point ``tokenc3_lsnet`` in group ``modprune``).

Uses only modprune's public hooks and API. Importing this module imports neither ultralytics nor
the blocks: detectors look the block classes up only once the blocks module is loaded (a model
cannot contain them before that), and the other hooks import lazily.

Categories (all by type; block priority, so a nested block wins over its parent):
``tokenc3``, ``lsconv``, ``lsghost``, ``dllm``, ``hyperace`` (HyperACE, FuseModule, C3AH),
``attention`` (the adaptive hypergraph: AdaHGComputation, AdaHGConv, AdaHyperedgeGen), ``fullpad``,
``dsc`` (DSConv, DSBottleneck, DSC3k, DSC3k2), and ``early_backbone`` (layers 0-2 of a model the
plugin's parser built, by the layer index ultralytics stores on each layer, above the blocks). The detection
head is the ultralytics integration's ``detect_head``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from modprune import Detector, Recipe, hookimpl
from modprune.detectors import BLOCK_PRIORITY, HEAD_PRIORITY
from modprune.recipes import recipe_from_file

if TYPE_CHECKING:  # pragma: no cover
    from modprune.workflows import DemoSpec

from modprune_tokenc3_lsnet.depth_hooks import modprune_removable_blocks  # noqa: F401 - hook implementation
from modprune_tokenc3_lsnet.structured_hooks import (  # noqa: F401 - hook implementations
    modprune_finalize_model,
    modprune_prepare_model,
    modprune_register_layer_pruners,
    modprune_unwrapped_parameters,
)

_BLOCKS = "modprune_tokenc3_lsnet.blocks"
_RECIPES = Path(__file__).parent / "recipes"
EARLY_BACKBONE_LAYERS = (0, 1, 2)

#: category -> block class names (looked up in ``modprune_tokenc3_lsnet.blocks``).
CATEGORY_BLOCKS: dict[str, tuple[str, ...]] = {
    "tokenc3": ("TokenC3",),
    "lsconv": ("LSConv",),
    "lsghost": ("LSGhostBottleneck",),
    "dllm": ("DynamicLocalMixer",),
    "hyperace": ("HyperACE", "FuseModule", "C3AH"),
    "attention": ("AdaHGComputation", "AdaHGConv", "AdaHyperedgeGen"),
    "fullpad": ("FullPAD_Tunnel",),
    "dsc": ("DSConv", "DSBottleneck", "DSC3k", "DSC3k2"),
}


def _block_types(names: tuple[str, ...]) -> tuple[type, ...]:
    blocks = sys.modules.get(_BLOCKS)
    if blocks is None:
        return ()
    return tuple(getattr(blocks, n) for n in names)


def _is_block(names: tuple[str, ...]) -> Callable[[nn.Module, str], bool]:
    def predicate(module: nn.Module, _qualified_name: str) -> bool:
        types = _block_types(names)
        return bool(types) and isinstance(module, types)

    return predicate


def _is_early_layer(module: nn.Module, _qualified_name: str) -> bool:
    """Layers 0-2 of a model this plugin's parser built (it marks each top-level layer with
    ``built_by`` beside ultralytics' layer index ``i``), never a stock ultralytics model's."""
    index = getattr(module, "i", None)
    return (
        getattr(module, "built_by", None) == "TokenC3-LSNet parser"  # parse.BUILT_BY (not imported: no ultralytics)
        and isinstance(index, int)
        and index in EARLY_BACKBONE_LAYERS
    )


@hookimpl
def modprune_register_detectors() -> list[Detector]:
    detectors = [
        Detector(
            name=f"tokenc3_lsnet.{category}",
            category=category,
            predicate=_is_block(names),
            priority=BLOCK_PRIORITY,
            description=f"TokenC3-LSNet blocks: {', '.join(names)}",
        )
        for category, names in CATEGORY_BLOCKS.items()
    ]
    detectors.append(
        Detector(
            name="tokenc3_lsnet.early_backbone",
            category="early_backbone",
            predicate=_is_early_layer,
            priority=(BLOCK_PRIORITY + HEAD_PRIORITY) // 2,
            description="layers 0-2 of a TokenC3-LSNet model (stem and first TokenC3), by layer index",
        )
    )
    return detectors


@hookimpl
def modprune_register_recipes() -> list[Recipe]:
    return [recipe_from_file(p) for p in sorted(_RECIPES.glob("*.yaml"))]


#: The demo ``modprune demo`` runs by default when this plugin is installed.
DEMO_NAME = "tokenc3-lsnet-n"


@hookimpl
def modprune_register_demos() -> list[DemoSpec]:
    """TokenC3-LSNet-n from its shipped yaml, the seed's unstructured recipe and the structured one."""
    from modprune.workflows import DemoSpec

    return [
        DemoSpec(
            name=DEMO_NAME,
            model="yolov13n_lsnet_p2_simple.yaml",
            unstructured_recipe="tokenc3-lsnet-seed",
            structured_recipe="tokenc3-lsnet-structured",
            title="modprune demo: TokenC3-LSNet-n",
            description="the user's TokenC3-LSNet-n: the seed's unstructured design vs structured pruning",
            unstructured_label="seed-unstructured",
            unstructured_note="the seed's unstructured design",
        )
    ]


def _have_ultralytics() -> bool:
    """The blocks and the parser build on ultralytics; without it this plugin offers no classes or models."""
    import importlib.util

    return sys.modules.get("ultralytics", ...) is not None and importlib.util.find_spec("ultralytics") is not None


@hookimpl
def modprune_fusable_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The pairs ``modprune.fuse`` cannot see by itself: each ``DSConv``'s pointwise conv and its BatchNorm
    (``SiLU(BN(pw(dw(x))))``).

    The plugin's other conv + BN pairs are neighbours in plain ``nn.Sequential`` blocks (the LSConv
    branches, the small-target enhancers, the cross interaction), which modprune folds without help; the
    DynamicLocalMixer's ``norm`` normalises a sum of two paths and cannot be folded into one conv.
    """
    (dsconv,) = _block_types(("DSConv",)) or (None,)
    if dsconv is None:
        return []
    return [
        (m.pw, m.bn)
        for m in model.modules()
        if isinstance(m, dsconv) and type(m).forward is dsconv.forward
        and isinstance(getattr(m, "pw", None), nn.Conv2d) and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)
    ]


@hookimpl
def modprune_register_safe_globals() -> list[type]:
    if not _have_ultralytics():
        return []
    from modprune_tokenc3_lsnet import blocks
    from modprune_tokenc3_lsnet.prunable import PRUNABLE_CLASSES  # models saved between pruning steps

    return [getattr(blocks, name) for name in blocks.__all__ if isinstance(getattr(blocks, name), type)] + list(
        PRUNABLE_CLASSES
    )


@hookimpl
def modprune_register_model_modules() -> list[type]:
    if not _have_ultralytics():
        return []
    from modprune.integrations.ultralytics import ensure_offline


    ensure_offline()  # before the parser module imports ultralytics
    from modprune_tokenc3_lsnet.parse import PLUGIN_LAYERS

    return list(PLUGIN_LAYERS.values())


@hookimpl
def modprune_load_model(path: Path, trust_pickle: bool) -> Any:
    """Build TokenC3-LSNet from a model yaml (a path, or a shipped config's bare name such as
    ``yolov13n_lsnet_p2_simple.yaml``) that uses this plugin's blocks, or load a checkpoint saved by the
    user's fork (its pickle names a class of ``FORK_CLASS_PATHS``; loaded with the aliases, weights-only,
    ``train_args`` kept as ``model.args``); None for anything else."""
    if not _have_ultralytics():
        return None  # without ultralytics modprune reports what to install
    if Path(path).suffix.lower() not in (".yaml", ".yml"):
        return _load_fork(Path(path), trust_pickle)
    from modprune.integrations.ultralytics import ensure_offline

    ensure_offline()  # before anything here imports ultralytics
    from modprune_tokenc3_lsnet.model import build_model
    from modprune_tokenc3_lsnet.parse import find_plugin_cfg, load_cfg, uses_plugin_modules

    if find_plugin_cfg(path) is None:
        if not Path(path).is_file():
            return None
        try:
            cfg = load_cfg(path)
        except Exception:  # not a model yaml: let other plugins try
            return None
        if not (isinstance(cfg, dict) and uses_plugin_modules(cfg)):
            return None
    return build_model(str(path)).float().eval()


def _load_fork(path: Path, trust_pickle: bool) -> Any:
    """A fork checkpoint's model, or None when ``path`` is no fork checkpoint."""
    from modprune_tokenc3_lsnet.compat import is_fork_checkpoint

    if not is_fork_checkpoint(path):
        return None
    from modprune.integrations.ultralytics import ensure_offline

    ensure_offline()
    from modprune_tokenc3_lsnet.compat import load_fork_model

    return load_fork_model(path, trust_pickle=trust_pickle)
