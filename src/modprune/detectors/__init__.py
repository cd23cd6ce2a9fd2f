"""Module detectors: type-based predicates that put every module in a category."""

from modprune.detectors.base import (
    BLOCK_PRIORITY,
    HEAD_PRIORITY,
    LAYER_PRIORITY,
    OTHER,
    Detector,
    by_type,
)
from modprune.detectors.classify import Categories, classify

__all__ = [
    "BLOCK_PRIORITY",
    "HEAD_PRIORITY",
    "LAYER_PRIORITY",
    "OTHER",
    "Categories",
    "Detector",
    "by_type",
    "classify",
]
