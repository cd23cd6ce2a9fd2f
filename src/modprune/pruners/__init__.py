"""Pruners: unstructured masks, structured channel removal, depth (whole-block) removal."""

from modprune.pruners.base import NoOptions, PruneContext, PruneOutcome, PrunePlan, Pruner
from modprune.pruners.depth_blocks import RemovableBlock

__all__ = ["NoOptions", "PruneContext", "PruneOutcome", "PrunePlan", "Pruner", "RemovableBlock"]
