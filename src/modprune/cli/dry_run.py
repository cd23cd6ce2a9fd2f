"""``modprune prune ... --dry-run``: prune a copy in memory and print the per-layer plan; write nothing."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from modprune.cli.common import render_table
from modprune.measure.layers import LayerRow, layer_rows

__all__ = ["dry_run", "plan_table"]


def dry_run(model: nn.Module, config: Any, example_inputs: Any) -> str:
    """Prune a deep copy of ``model`` as ``config`` says; the per-layer table and the report's summary."""
    from modprune import api

    before = layer_rows(model, example_inputs)
    pruned = copy.deepcopy(model)
    report = api.prune(pruned, config, example_inputs=example_inputs)
    after = layer_rows(pruned, example_inputs)
    summary = report.to_markdown().split("\n\n| category", 1)[0]
    return f"{plan_table(before, after)}\n\n{summary}\n\ndry run: nothing written"


def _width(row: LayerRow | None, attr: str) -> str:
    return "-" if row is None else str(getattr(row, attr))


def plan_table(before: dict[str, LayerRow], after: dict[str, LayerRow]) -> str:
    """One row per layer: outputs and inputs
    before -> after, MACs before -> after; ``-`` where a layer exists on one side only (e.g. a block a
    plugin split into two convolutions; those are listed where they appear in the pruned model)."""
    rows = []
    for name in _merged(list(before), list(after)):
        b, a = before.get(name), after.get(name)
        kind = (b or a).type  # type: ignore[union-attr]
        changed = b is None or a is None or (b.out_channels, b.in_channels) != (a.out_channels, a.in_channels)
        rows.append([
            name, kind,
            f"{_width(b, 'out_channels')} -> {_width(a, 'out_channels')}",
            f"{_width(b, 'in_channels')} -> {_width(a, 'in_channels')}",
            f"{_macs(b)} -> {_macs(a)}",
            "*" if changed else "",
        ])
    total_b, total_a = sum(r.macs for r in before.values()), sum(r.macs for r in after.values())
    rows.append(["total (these layers)", "", "", "", f"{total_b / 1e6:.2f}M -> {total_a / 1e6:.2f}M", ""])
    return render_table(["layer", "type", "outputs", "inputs", "MACs", "changed"], rows)


def _merged(before: list[str], after: list[str]) -> list[str]:
    """Both name lists in one order: before's, with names only ``after`` has placed before the next
    name both share (where they appear in the pruned model)."""
    position = {name: i for i, name in enumerate(after)}
    shared, out, done = set(before), [], set()
    for name in before:
        for extra in after[: position.get(name, 0)]:
            if extra not in shared and extra not in done:
                done.add(extra)
                out.append(extra)
        out.append(name)
    return out + [n for n in after if n not in shared and n not in done]


def _macs(row: LayerRow | None) -> str:
    return "-" if row is None else f"{row.macs / 1e6:.2f}M"
