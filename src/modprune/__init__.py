"""modprune: pluggable pruning for PyTorch detection models.

Importing modprune imports neither ultralytics, onnx nor torchvision; integrations load lazily.
"""

from modprune.api import (
    categorize,
    find_recipe,
    get_recipe,
    list_detectors,
    list_importances,
    list_pruners,
    list_recipes,
    load_recipe,
    prune,
    resolve_config,
    valid_categories,
)
from modprune.calibrate import calibrate_batchnorm, image_batches
from modprune.config import PruneConfig
from modprune.detectors import Categories, Detector, by_type
from modprune.exceptions import (
    ConfigError,
    DatasetError,
    DuplicateStrategyError,
    ModelLoadError,
    ModpruneError,
    OutputPathError,
    UnknownStrategyError,
    UnreachableTargetError,
    UnsafeCheckpointError,
    UnsupportedModelError,
    TraceTimeoutError,
)
from modprune.fusion import fuse
from modprune.hookspecs import hookimpl, hookspec
from modprune.importance import Importance
from modprune.plugins import ModpruneManager, get_plugin_manager
from modprune.pruners import PruneContext, PruneOutcome, PrunePlan, Pruner, RemovableBlock
from modprune.pruners.masks import make_permanent
from modprune.recipes import Recipe
from modprune.report import PruneReport
from modprune.serialization import load, save

__version__ = "0.1.0"

__all__ = [
    "Categories",
    "ConfigError",
    "DatasetError",
    "Detector",
    "DuplicateStrategyError",
    "Importance",
    "ModelLoadError",
    "ModpruneError",
    "ModpruneManager",
    "OutputPathError",
    "PruneConfig",
    "PruneReport",
    "PruneContext",
    "PruneOutcome",
    "PrunePlan",
    "Pruner",
    "Recipe",
    "RemovableBlock",
    "UnknownStrategyError",
    "UnreachableTargetError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "TraceTimeoutError",
    "__version__",
    "by_type",
    "calibrate_batchnorm",
    "categorize",
    "find_recipe",
    "fuse",
    "get_plugin_manager",
    "get_recipe",
    "hookimpl",
    "hookspec",
    "image_batches",
    "list_detectors",
    "list_importances",
    "list_pruners",
    "list_recipes",
    "load",
    "load_recipe",
    "make_permanent",
    "prune",
    "resolve_config",
    "save",
    "valid_categories",
]
