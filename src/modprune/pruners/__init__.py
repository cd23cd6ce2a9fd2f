"""Pruners: unstructured masks and structured channel removal."""

from modprune.pruners.base import PruneContext, Pruner

__all__ = ["PruneContext", "Pruner"]
