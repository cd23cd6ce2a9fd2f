"""Assign a category to every module and parameter of a model."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from torch import nn

from modprune.detectors.base import OTHER, Detector
from modprune.exceptions import UnsupportedModelError

__all__ = ["Categories", "classify"]

_Rank = tuple[int, int]  # (priority, depth)


@dataclass
class Categories:
    """The result of :func:`classify`.

    ``modules`` maps each module's qualified name to its category; ``params`` maps each
    parameter's qualified name to the category of its owning module; ``detector`` names the
    detector behind each module's category (``None`` for :data:`OTHER`).
    """

    modules: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    detector: dict[str, str | None] = field(default_factory=dict)

    def param_names(self, category: str) -> list[str]:
        """Qualified names of the parameters in ``category``."""
        return [name for name, cat in self.params.items() if cat == category]

    def names(self) -> list[str]:
        """Categories present, sorted."""
        return sorted(set(self.params.values()) | set(self.modules.values()))

    def counts(self, model: nn.Module) -> Counter[str]:
        """Parameter elements per category."""
        sizes = dict(model.named_parameters())
        return Counter({cat: 0 for cat in self.names()}) + Counter(
            {cat: sum(sizes[n].numel() for n in self.param_names(cat)) for cat in self.names()}
        )


def _best_own(module: nn.Module, name: str, detectors: Iterable[Detector]) -> Detector | None:
    best: Detector | None = None
    for det in detectors:
        if best is not None and det.priority <= best.priority:
            continue
        try:
            hit = det.matches(module, name)
        except Exception as exc:  # a plugin's predicate failing on an unexpected module
            raise UnsupportedModelError(
                f"detector {det.name!r} failed on module {name or '<root>'!r} ({type(module).__name__}): "
                f"{type(exc).__name__}: {exc}",
                module,
            ) from exc
        if hit:
            best = det
    return best


def classify(model: nn.Module, detectors: Iterable[Detector]) -> Categories:
    """Categorise every module and parameter of ``model`` (see :mod:`modprune.detectors.base`)."""
    detectors = list(detectors)
    result = Categories()
    inherited: dict[str, tuple[_Rank, str, str | None]] = {}
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        parent = name.rpartition(".")[0] if "." in name else ("" if name else None)
        best = inherited.get(parent) if parent is not None else None
        own = _best_own(module, name, detectors)
        if own is not None and (best is None or (own.priority, depth) >= best[0]):
            best = ((own.priority, depth), own.category, own.name)
        inherited[name] = best if best is not None else ((-(10**9), -1), OTHER, None)
        _, category, det_name = inherited[name]
        result.modules[name] = category
        result.detector[name] = det_name
        for pname, _ in module.named_parameters(recurse=False):
            result.params[f"{name}.{pname}" if name else pname] = category
    return result
