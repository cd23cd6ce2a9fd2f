"""Every hook modprune calls, in one place, grouped by phase.

A plugin is any module or object with functions named like these and decorated with
``modprune.hookimpl``. Built-in strategies are registered through exactly these hooks, like
third-party plugins found through the ``modprune`` entry-point group.

Collection hooks (``modprune_register_*``) return lists; modprune concatenates the lists of every
plugin. Decision hooks are ``firstresult``: modprune stops at the first non-None result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import torch
    from torch import nn

    from modprune.cli.plugin_commands import Command
    from modprune.config import PruneConfig
    from modprune.detectors.base import Detector
    from modprune.importance.base import Importance
    from modprune.pruners.base import Pruner
    from modprune.pruners.depth_blocks import RemovableBlock
    from modprune.pruners.heads import HeadLayout
    from modprune.recipes import Recipe
    from modprune.workflows.demo import DemoSpec

PROJECT_NAME = "modprune"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- Phase 1: registration (called once when a plugin manager is built) ---------------------


@hookspec
def modprune_register_detectors() -> list[Detector]:
    """Register module detectors.

    :return: a list of :class:`modprune.detectors.Detector`, each a type-based predicate over
        ``(module, qualified_name)`` that puts matching modules in a category.
    """


@hookspec
def modprune_register_importances() -> list[Importance]:
    """Register importance metrics.

    :return: a list of :class:`modprune.importance.Importance` instances (each has a unique
        ``name`` and declares whether it scores weights, channels or both).
    """


@hookspec
def modprune_register_pruners() -> list[Pruner]:
    """Register pruners.

    :return: a list of :class:`modprune.pruners.Pruner` instances, selected by ``PruneConfig.method``.
        Each declares its ``target_kinds`` and ``options_type`` (its ``pruner_options``); modprune
        calls ``plan`` once, then ``apply`` once, which returns a ``PruneOutcome``.
    """


@hookspec
def modprune_register_recipes() -> list[Recipe]:
    """Register named recipes (a name, a description and a :class:`PruneConfig`).

    :return: a list of :class:`modprune.recipes.Recipe`.
    """


@hookspec
def modprune_register_layer_pruners() -> list[tuple[type, Any]]:
    """Register torch-pruning layer pruners for custom module types.

    Used by structured pruning, for modules whose parameters torch-pruning cannot slice by itself.

    :return: a list of ``(module_type, pruner)`` pairs, where ``module_type`` is a class and
        ``pruner`` an instance of ``torch_pruning.pruner.function.BasePruningFunc``; any other entry
        is skipped with a warning naming the plugin.
    """


@hookspec
def modprune_register_safe_globals() -> list[type]:
    """Register classes that checkpoint loading may rebuild without the user's opt-in.

    modprune's restricted unpickler (:mod:`modprune.safe_pickle`) creates these from stored state only
    (no ``__init__``; ``__dict__`` updated; ``__setstate__`` only when PyTorch defines it), so a file cannot
    make their constructors run.

    :return: a list of classes (module types and plain helpers). Anything not listed (nor declared in a
        modprune file's class manifest) needs the user's explicit opt-in.
    """


@hookspec
def modprune_register_model_modules() -> list[type]:
    """Register the module classes an ultralytics-style model yaml may name.

    modprune validates every model yaml before a parser sees it (:mod:`modprune.model_yaml`): a layer's
    ``module`` must be ``nn.<torch layer>`` or the ``__name__`` of a class registered here. Register only
    classes whose constructors build layers from their arguments (no file reads, downloads or ``eval``).

    :return: a list of ``nn.Module`` subclasses, named in yamls by their ``__name__``.
    """


# --- Phase 2: loading and saving models ------------------------------------------------------


@hookspec(firstresult=True)
def modprune_load_model(path: Path, trust_pickle: bool) -> nn.Module | None:
    """Load a model file modprune itself does not recognise (e.g. an ultralytics checkpoint or yaml).

    :param path: an existing file.
    :param trust_pickle: the user explicitly allowed arbitrary pickle code.
    :return: the model, or None when this plugin does not handle this kind of file.
        Stops at first non-None result.
    """


@hookspec(firstresult=True)
def modprune_save_model(model: nn.Module, path: Path, metadata: dict[str, Any]) -> bool | None:
    """Save a model in a framework-specific format (e.g. an ultralytics checkpoint).

    :param path: the destination (a temporary path; modprune renames it into place).
    :param metadata: modprune's metadata record, to be stored alongside.
    :return: True when this plugin wrote the file, None otherwise. Stops at first non-None result.
    """


# --- Phase 3: preparing a model for pruning --------------------------------------------------


@hookspec(firstresult=True)
def modprune_unwrap_model(model: Any) -> nn.Module | None:
    """The ``nn.Module`` to prune in place of a wrapper object the user passed (e.g. ultralytics' ``YOLO``).

    Called by :func:`modprune.prune` before anything else, so that pruning works on the wrapped network
    (and never calls a wrapper's own ``train()``/``eval()``, which may start a training run).

    :param model: what the user passed to ``prune``.
    :return: the module to prune in place (the wrapper then holds the pruned module), or None when
        ``model`` is no wrapper this plugin knows. Stops at first non-None result.
    """


@hookspec
def modprune_prepare_model(model: nn.Module, config: PruneConfig) -> None:
    """Rewrite blocks in place into prunable equivalents with identical outputs.

    Called for every plugin before structured pruning (e.g. split a convolution whose output is
    ``chunk``-ed into two convolutions). Must not change the model's outputs.
    """


@hookspec
def modprune_protected_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that structured pruning must never change (e.g. a detection head's final convs).

    :return: modules whose output channels must stay as they are; their parameters stay untouched.
    """


@hookspec
def modprune_resizable_outputs(model: nn.Module, outputs: Any) -> list[torch.Tensor]:
    """Tensors among what ``model`` returned whose channel count structured pruning may change.

    Everything a model returns keeps its shape by default. A model that also returns intermediate
    feature maps for its own use (ultralytics' heads return the maps they were given, ``feats``, for the
    loss) names them here, so the layers producing them can still be pruned.

    :param model: the model being pruned (in eval mode, as it was traced).
    :param outputs: what ``model(example_inputs)`` returned during tracing.
    :return: tensors that are in ``outputs`` (compared by identity); anything else is ignored.
    """


@hookspec
def modprune_unwrapped_parameters(model: nn.Module) -> list[tuple[Any, int]]:
    """Bare ``nn.Parameter`` objects used in forward that structured pruning must slice.

    :return: ``(parameter, channel_dim)`` pairs, as torch-pruning's ``unwrapped_parameters``.
    """


@hookspec
def modprune_removable_blocks(model: nn.Module) -> list[RemovableBlock]:
    """Blocks of this plugin's kinds that depth pruning may remove whole (pruner ``depth``).

    Offer a block only when removing it keeps every tensor shape of the model: a residual block whose
    output is ``x + f(x)`` (``removal="identity"``: it is replaced by ``nn.Identity``), or an optional branch
    its parent skips when the attribute is ``None`` (``removal="none"``). modprune measures what removing
    each one alone changes in the model's output, honours protections, and removes the least harmful per
    MAC saved. A module offered by two plugins counts once.

    :param model: the model being pruned.
    :return: a list of :class:`modprune.pruners.depth_blocks.RemovableBlock` (module, qualified name, kind,
        removal); anything else, or a name that does not lead to its module, is skipped with a warning.
    """


@hookspec
def modprune_attention_heads(model: nn.Module) -> list[HeadLayout]:
    """Attention modules of ``model`` that structured pruning may prune by heads or head dimensions.

    Called after ``modprune_prepare_model``, before the dependency graph is built; modprune slices the
    layers each layout names and calls its ``update`` (see :mod:`modprune.pruners.heads` and the
    structured pruner's ``attention`` option). The module's input and output widths do not change.

    :return: one :class:`modprune.pruners.heads.HeadLayout` per attention module (flat list over plugins).
    """


# --- Phase 4: after pruning ------------------------------------------------------------------


@hookspec
def modprune_finalize_model(model: nn.Module) -> None:
    """Update module attributes after structured pruning (e.g. stored split sizes, widths)."""


@hookspec
def modprune_equal_width_layers(model: nn.Module) -> list[tuple[nn.Module, ...]]:
    """Layers whose output widths must end equal when structured pruning runs with
    ``pruner_options: {portable: true}``.

    Called on the prepared (rewritten) model once the pruning steps are done. For example the two
    first convolutions of a block split for pruning: with equal widths the block can be written back
    as the original class, so the checkpoint loads without the plugin. modprune narrows the wider
    layers of each tuple (lowest-L2 output channels first, through the dependency graph).

    :return: tuples of convolution / linear layers of ``model``, each to end at one width.
    """


# --- Phase 5: the inference form ------------------------------------------------------------


@hookspec
def modprune_fusable_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """Convolution + BatchNorm pairs inside this plugin's blocks that ``modprune.fuse`` may fold.

    modprune finds pairs that are neighbours in a plain ``nn.Sequential`` by itself; report the others
    (e.g. a block whose forward computes ``act(self.bn(self.conv(x)))``). Return a pair only when the
    BatchNorm normalises exactly that convolution's output and nothing else reads the convolution's
    output: modprune folds the BatchNorm into the convolution and replaces it by ``nn.Identity``.

    :param model: the model being fused (a copy of the user's, in eval mode).
    :return: a list of ``(conv, bn)`` tuples: ``conv`` an ``nn.Conv1d/2d/3d`` and ``bn`` a BatchNorm of
        ``conv.out_channels`` features with running statistics; anything else is skipped with a warning.
    """


# --- Phase 6: the command line (collected on demand, not when a plugin manager is built) -----


@hookspec
def modprune_register_commands() -> list[Command]:
    """Add subcommands to the ``modprune`` command line.

    Collected when the CLI builds its parser (so keep it cheap: import heavy packages inside the
    command's ``run``). A command whose name is already taken (a built-in or an earlier plugin's) is
    skipped with a warning; so is a plugin whose hook or ``add_arguments`` raises.

    :return: a list of :class:`modprune.cli.Command` (name, help, ``add_arguments(parser)``,
        ``run(args) -> int``).
    """


@hookspec
def modprune_register_demos() -> list[DemoSpec]:
    """Offer a model and recipes for ``modprune demo`` (selected with ``--demo NAME``).

    The first demo registered (plugin order) is the default; modprune's stock demo (an ultralytics
    yolov8n with built-in recipes) comes after every plugin's. A name already offered is skipped.

    :return: a list of :class:`modprune.workflows.DemoSpec`.
    """
