"""Detectors and module lookups for ultralytics models, without importing ultralytics eagerly.

A model can only contain ultralytics modules once ``ultralytics`` has been imported, so every
predicate first checks ``sys.modules`` and resolves ultralytics' classes only then (once, cached).
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Iterator

from torch import nn

from modprune.detectors.base import BLOCK_PRIORITY, HEAD_PRIORITY, Detector

__all__ = [
    "attention_modules",
    "attention_types",
    "detect_heads",
    "detectors",
    "head_types",
    "protected_modules",
]


@functools.lru_cache(maxsize=1)
def _types() -> dict[str, tuple[type, ...]]:
    """ultralytics' classes by role (imported on first use, after ultralytics itself was imported)."""
    from ultralytics.nn.modules import block, head  # noqa: PLC0415

    def pick(module: object, *names: str) -> tuple[type, ...]:
        return tuple(getattr(module, n) for n in names if isinstance(getattr(module, n, None), type))

    return {
        "head": pick(head, "Detect"),
        # Modules whose heads are reshaped from channels: torch-pruning cannot slice them consistently.
        "attention_core": pick(block, "Attention", "AAttn", "MaxSigmoidAttnBlock"),
        "attention": pick(block, "Attention", "AAttn", "MaxSigmoidAttnBlock", "PSABlock", "ABlock"),
        "dfl": pick(block, "DFL"),
        "proto": pick(block, "Proto"),
    }


def _loaded() -> bool:
    return "ultralytics" in sys.modules


def head_types() -> tuple[type, ...]:
    """ultralytics' Detect class (Segment, Pose, OBB, v10Detect... derive from it); () if not loaded."""
    return _types()["head"] if _loaded() else ()


def attention_types(core: bool = False) -> tuple[type, ...]:
    """ultralytics attention classes: ``core`` = the modules that reshape channels into heads."""
    return _types()["attention_core" if core else "attention"] if _loaded() else ()


def _is(role: str) -> Callable[[nn.Module, str], bool]:
    def predicate(module: nn.Module, _name: str) -> bool:
        return _loaded() and isinstance(module, _types()[role])

    return predicate


def detectors() -> list[Detector]:
    """The ultralytics detectors: detection heads, attention blocks, DFL."""
    return [
        Detector(
            "ultralytics_detect_head",
            "detect_head",
            _is("head"),
            priority=HEAD_PRIORITY,
            description="ultralytics Detect heads and subclasses (Segment, Pose, OBB, v10Detect, ...)",
        ),
        Detector(
            "ultralytics_attention",
            "attention",
            _is("attention"),
            priority=BLOCK_PRIORITY,
            description="ultralytics Attention, AAttn, PSABlock, ABlock, MaxSigmoidAttnBlock",
        ),
        Detector(
            "ultralytics_dfl",
            "dfl",
            _is("dfl"),
            priority=HEAD_PRIORITY,
            description="ultralytics DFL (distribution focal loss integral, inside the head)",
        ),
    ]


def detect_heads(model: nn.Module) -> Iterator[nn.Module]:
    """Every ultralytics Detect-like head in ``model``."""
    types = head_types()
    if types:
        yield from (m for m in model.modules() if isinstance(m, types))


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Attention modules whose channels are reshaped into heads (protected from channel pruning)."""
    types = attention_types(core=True)
    return [m for m in model.modules() if isinstance(m, types)] if types else []


def _final_convs(head: nn.Module) -> Iterator[nn.Module]:
    """The last convolution of each branch of a head (box, class, mask, keypoint, angle outputs)."""
    for child in head.children():
        if not isinstance(child, nn.ModuleList):
            continue
        for branch in child:
            if isinstance(branch, nn.Sequential) and len(branch) and isinstance(branch[-1], nn.Conv2d):
                yield branch[-1]


def protected_modules(model: nn.Module) -> list[nn.Module]:
    """Head outputs (final convs: 4 * reg_max box bins, nc classes, ...), DFL, mask prototypes'
    last conv, and attention modules."""
    if not _loaded():
        return []
    out: list[nn.Module] = []
    for head in detect_heads(model):
        out.extend(_final_convs(head))
        dfl = getattr(head, "dfl", None)
        if isinstance(dfl, _types()["dfl"]):
            out.append(dfl)
        proto = getattr(head, "proto", None)
        if isinstance(proto, _types()["proto"]) and isinstance(getattr(proto, "cv3", None), nn.Module):
            out.append(proto.cv3)
    out.extend(attention_modules(model))
    return out
