"""PNG plots of a comparison (matplotlib, Agg backend): latency with spread, accuracy vs MACs, and
parameters removed per category. Every axis names the input size it was measured at; legends sit
outside the data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

__all__ = ["write_plots"]

log = logging.getLogger(__name__)

#: Latency engines: (row key prefix, label).
ENGINES = (("torch", "PyTorch (fused)"), ("ort", "ONNX Runtime"))
#: Vertical distance between stacked labels (points; the labels are 8 pt).
_LINE_PT = 13


def write_plots(result: Mapping[str, Any], categories: Mapping[str, Mapping[str, tuple[int, int]]], out: Path) -> list[Path]:
    """The plots the comparison has data for, written into ``out``; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        log.warning("matplotlib is not installed: report written without plots")
        return []
    options = result.get("options") or {}
    paths = []
    if any(r.get(f"{p}_median_ms") is not None for r in result["rows"] for p, _ in ENGINES):
        paths.append(_latency_plot(plt, result["rows"], options, out / "latency.png"))
    rows = [r for r in result["rows"] if r.get("mAP50") is not None]
    if rows:
        paths.append(_accuracy_plot(plt, rows, options, out / "accuracy_vs_macs.png"))
    if categories:
        paths.append(_sparsity_plot(plt, categories, out / "sparsity_by_category.png"))
    return paths


def _input(options: Mapping[str, Any], size_key: str = "imgsz") -> str:
    size = options.get(size_key) or options.get("imgsz")
    return f"input {options.get('batch', 1)}x3x{size}x{size}" if size else "input size not recorded"


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps a legend placed outside the axes
    plt.close(fig)
    return path


def _latency_plot(plt: Any, rows: list[Mapping[str, Any]], options: Mapping[str, Any], path: Path) -> Path:
    """Median latency per model and engine, error bars from p10 to p90 of the measured rounds."""
    engines = [(p, label) for p, label in ENGINES if any(r.get(f"{p}_median_ms") is not None for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows) * len(engines)), 4))
    width = 0.8 / len(engines)
    for j, (prefix, label) in enumerate(engines):
        xs, med, low, high = [], [], [], []
        for i, r in enumerate(rows):
            if r.get(f"{prefix}_median_ms") is None:
                continue
            m = r[f"{prefix}_median_ms"]
            xs.append(i + j * width)
            med.append(m)
            low.append(max(0.0, m - r.get(f"{prefix}_p10_ms", m)))
            high.append(max(0.0, r.get(f"{prefix}_p90_ms", m) - m))
        ax.bar(xs, med, width, yerr=[low, high], capsize=4, label=f"{label}: median, p10-p90")
    ax.set_xticks([i + width * (len(engines) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels([r["name"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel(f"latency per batch (ms), {_input(options)}")
    ax.set_title(f"Latency, {options.get('threads', '?')} threads, {options.get('rounds', '?')} interleaved rounds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(plt, fig, path)


def _accuracy_plot(plt: Any, rows: list[Mapping[str, Any]], options: Mapping[str, Any], path: Path) -> Path:
    """mAP50 against GMACs; each label on its own line above its point, joined to it by a thin line:
    labels of points that coincide or lie close never overlap."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ordered = sorted(rows, key=lambda r: (r["macs"], r["mAP50"]))
    for k, r in enumerate(ordered):
        x, y = r["macs"] / 1e9, r["mAP50"]
        ax.scatter(x, y, s=40, zorder=3)
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(10, 10 + _LINE_PT * k), fontsize=8,
                    va="bottom", arrowprops={"arrowstyle": "-", "lw": 0.5, "alpha": 0.6})
    ax.margins(x=0.25, y=0.15)
    ax.set_ylim(top=ax.get_ylim()[1] + (ax.get_ylim()[1] - ax.get_ylim()[0]) * 0.1 * len(ordered))
    ax.set_xlabel(f"GMACs per image, {_input(options)}")
    ax.set_ylabel(f"mAP50, validated at {options.get('val_imgsz') or options.get('imgsz', '?')}px")
    ax.set_title("Accuracy vs MACs")
    ax.grid(True, alpha=0.3)
    return _save(plt, fig, path)


def _sparsity_plot(plt: Any, categories: Mapping[str, Mapping[str, tuple[int, int]]], path: Path) -> Path:
    names = list(categories)
    cats = sorted({c for m in categories.values() for c in m})
    base = categories[names[0]]
    fig, ax = plt.subplots(figsize=(max(6, len(cats) * 0.9), 4))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        removed = []
        for c in cats:
            _, nz0 = base.get(c, (0, 0))
            _, nz = categories[name].get(c, (0, 0))
            removed.append(100 * (1 - nz / nz0) if nz0 else 0.0)
        ax.bar([k + i * width for k in range(len(cats))], removed, width, label=name)
    ax.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(cats))])
    ax.set_xticklabels(cats, rotation=30, ha="right")
    ax.set_ylabel("nonzero parameters removed vs base (%)")
    ax.set_title("Pruning by module category")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(plt, fig, path)
