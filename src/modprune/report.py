"""The report :func:`modprune.prune` returns."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modprune.detectors.classify import Categories
from modprune.measure import MAC_COUNTER
from modprune.measure.walk import effective_parameters

__all__ = ["CategoryRow", "PruneReport", "category_table"]


@dataclass
class CategoryRow:
    """Parameter counts of one category before and after pruning.

    ``weight`` is the category's relative pruning weight (``PruneConfig.ratio_for``: the categories'
    ratios are scaled together until the target is reached), not a fraction removed.
    """

    category: str
    params_before: int
    params_after: int
    nonzero_before: int
    nonzero_after: int
    weight: float
    protected: bool

    @property
    def requested_ratio(self) -> float:
        """Former name of :attr:`weight` (kept for readers of old code; the JSON carries both keys)."""
        return self.weight

    @property
    def removed_fraction(self) -> float:
        """Fraction of the category's nonzero parameters gone (zeroed or removed)."""
        return 1 - self.nonzero_after / self.nonzero_before if self.nonzero_before else 0.0


@torch.no_grad()
def category_table(model: nn.Module, categories: Categories) -> dict[str, tuple[int, int]]:
    """``{category: (params, nonzero)}`` for ``model`` as the forward sees it."""
    out: dict[str, tuple[int, int]] = {}
    for name, tensor in effective_parameters(model):
        cat = categories.params.get(name) or categories.params.get(_original(name), "other")
        p, nz = out.get(cat, (0, 0))
        out[cat] = (p + tensor.numel(), nz + int(torch.count_nonzero(tensor)))
    return out


def _original(name: str) -> str:
    owner, _, attr = name.rpartition(".")
    return f"{owner + '.' if owner else ''}parametrizations.{attr}.original"


@dataclass
class PruneReport:
    """What pruning did: counts before/after, per-category table, achieved vs target."""

    method: str
    importance: str
    target: float
    target_kind: str | None
    achieved: float
    params_before: int
    params_after: int
    nonzero_before: int
    nonzero_after: int
    macs_before: int | None
    macs_after: int | None
    seconds: float
    steps: int
    categories: list[CategoryRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    mac_counter: str = MAC_COUNTER
    #: Latency target: start, predicted and measured latency (ms) of the pruned model, and the error.
    latency: dict[str, Any] | None = None

    @property
    def macs_reduction(self) -> float | None:
        if not self.macs_before or self.macs_after is None:
            return None
        return 1 - self.macs_after / self.macs_before

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON friendly)."""
        data = dataclasses.asdict(self)
        data["macs_reduction"] = self.macs_reduction
        data["params_reduction"] = 1 - self.params_after / self.params_before if self.params_before else 0.0
        data["nonzero_reduction"] = 1 - self.nonzero_after / self.nonzero_before if self.nonzero_before else 0.0
        for row, obj in zip(data["categories"], self.categories):
            row["removed_fraction"] = obj.removed_fraction
            row["requested_ratio"] = obj.weight  # the former key of "weight", for existing consumers
        return data

    def digest(self) -> str:
        """Short sha256 of the report's JSON (goes into saved files' metadata)."""
        data = self.to_dict()
        data.pop("seconds")
        data.pop("latency")  # timings differ from run to run
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_markdown(self) -> str:
        """A human-readable summary with the per-category table."""
        lines = [
            f"method {self.method}, importance {self.importance}, target {self.target:.3f} ({self.target_kind}), "
            f"achieved {self.achieved:.4f}, {self.seconds:.2f} s",
            "",
            f"params {self.params_before:,} -> {self.params_after:,}; nonzero {self.nonzero_before:,} -> "
            f"{self.nonzero_after:,}",
        ]
        if self.macs_before is not None and self.macs_after is not None:
            lines.append(f"MACs {self.macs_before / 1e9:.3f} G -> {self.macs_after / 1e9:.3f} G ({self.mac_counter})")
        if self.latency is not None:
            lines.append(_latency_line(self.latency))
        lines += [
            "",
            "| category | params before | params after | nonzero after | removed | weight (relative) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.categories:
            ratio = "protected" if r.protected else f"{r.weight:.3f}"
            lines.append(
                f"| {r.category} | {r.params_before:,} | {r.params_after:,} | {r.nonzero_after:,} | "
                f"{100 * r.removed_fraction:.2f}% | {ratio} |"
            )
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def _latency_line(latency: dict[str, Any]) -> str:
    """The report's latency line: start, predicted and measured (with the prediction error)."""
    line = f"latency {latency.get('start_ms', 0.0):.3f} ms -> predicted {latency.get('predicted_ms', 0.0):.3f} ms"
    if latency.get("measured_ms") is not None:
        line += f", measured {latency['measured_ms']:.3f} ms"
        if latency.get("prediction_error") is not None:
            line += f" (prediction error {latency['prediction_error']:+.1%})"
        if latency.get("reliable") is False:
            line += " (unreliable: machine busy)"
    if latency.get("noisy_layer_calls"):
        line += f" ({latency['noisy_layer_calls']} of {latency.get('layer_calls', '?')} layer timings taken busy)"
    return line + f" ({latency.get('backend', '?')}, {latency.get('threads', '?')} thread(s))"
