"""Equal widths after structured pruning (``pruner_options: {portable: true}``).

Plugins name layers whose output widths must end equal through ``modprune_equal_width_layers``: for
instance the two first convolutions of a block that was split for pruning, which can be written back
as the original single-convolution class (and so saved with the original library's classes only) when
both halves keep the same width. :func:`equalize_widths` prunes the wider layers of each set down to the
narrowest one, removing their lowest-L2 output channels through the same dependency graph as the
pruning itself, so that every consumer follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping as tp_index_mapping

__all__ = ["Equalized", "equalize_widths"]

log = logging.getLogger(__name__)


@dataclass
class Equalized:
    """What :func:`equalize_widths` did: layers narrowed, sets left as they were (and why)."""

    narrowed: list[str] = field(default_factory=list)
    channels_removed: int = 0
    skipped: list[str] = field(default_factory=list)


def _handler(module: nn.Module) -> Any:
    """torch-pruning's output-channel rule for ``module``, or None when it has no plain one."""
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    return None


def _lowest(module: nn.Module, count: int) -> list[int]:
    """Indices of the ``count`` output channels with the lowest L2 norm of their weights."""
    norms = module.weight.detach().flatten(1).norm(dim=1)
    return sorted(torch.argsort(norms, stable=True)[:count].tolist())


def _narrow(graph: Any, name: str, module: nn.Module, keep: int, frozen_ids: set[int], done: Equalized) -> None:
    drop = _lowest(module, int(module.weight.shape[0]) - keep)
    group = graph.get_pruning_group(module, _handler(module), idxs=drop)
    touched = [dep.target.module for dep, _ in group]
    if any(id(m) in frozen_ids for m in touched):
        done.skipped.append(f"{name} (its channels reach a protected module)")
        return
    if not graph.check_pruning_group(group):
        done.skipped.append(f"{name} (torch-pruning refuses the group: a layer would lose every channel)")
        return
    group.prune()
    done.narrowed.append(f"{name} {keep + len(drop)}->{keep}")
    done.channels_removed += len(drop)


def equalize_widths(model: nn.Module, graph: Any, layer_sets: Sequence[Sequence[nn.Module]],
                    frozen_ids: set[int]) -> Equalized:
    """Prune the wider layers of every set in ``layer_sets`` down to the set's narrowest width.

    :param graph: torch-pruning's ``DependencyGraph`` of ``model`` (the one the pruning used).
    :param layer_sets: sets of convolution / linear layers whose output widths must end equal.
    :param frozen_ids: ids of modules that must stay untouched; a set whose narrowing reaches one is
        skipped (and reported), as is a set with a layer that has no plain output-channel rule.
    """
    names = {id(m): n for n, m in model.named_modules()}
    done = Equalized()
    for layers in layer_sets:
        label = " / ".join(names.get(id(m), type(m).__name__) for m in layers)
        if any(_handler(m) is None or m not in graph.module2node for m in layers):
            done.skipped.append(f"{label} (not convolution / linear layers the graph holds)")
            continue
        keep = min(int(m.weight.shape[0]) for m in layers)
        for module in layers:
            if int(module.weight.shape[0]) > keep:
                tp_index_mapping.update_index_mapping(graph)
                _narrow(graph, names.get(id(module), "?"), module, keep, frozen_ids, done)
    if done.narrowed:
        log.info("portable: narrowed %d layers (%d channels): %s", len(done.narrowed), done.channels_removed,
                 ", ".join(done.narrowed))
    return done
