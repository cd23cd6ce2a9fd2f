"""Pruners: unstructured masks and structured channel removal."""

from modprune.pruners.base import NoOptions, PruneContext, PruneOutcome, PrunePlan, Pruner

__all__ = ["NoOptions", "PruneContext", "PruneOutcome", "PrunePlan", "Pruner"]
