"""Render a comparison (from :func:`modprune.evaluate.compare.compare_models`): a text/Markdown
table, and a report directory with Markdown, JSON and PNG plots."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from modprune.measure.machine import BUSY_LABEL
from modprune.serialization import atomic_path

__all__ = ["comparison_table", "write_report"]

log = logging.getLogger(__name__)


def _fmt_ms(row: Mapping[str, Any], prefix: str) -> str:
    med = row.get(f"{prefix}_median_ms")
    if med is None:
        return "-"
    text = f"{med:.1f} [{row[f'{prefix}_p10_ms']:.1f}-{row[f'{prefix}_p90_ms']:.1f}]"
    if row.get(f"{prefix}_reliable") is False:  # measured on a busy machine: never shown as a clean figure
        return f"{BUSY_LABEL}: {text}"
    return text


def _fmt_change(row: Mapping[str, Any], prefix: str) -> str:
    return row.get(f"{prefix}_verdict", "base")


def _fmt_float(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_table(result: Mapping[str, Any], *, markdown: bool = True) -> str:
    """One row per model. Latency is ``median [p10-p90] ms``; change columns come from the
    per-round A/B ratio and say "no measurable change" when its spread includes 1."""
    headers = ["model", "params", "nonzero", "GMACs", "torch ms", "torch vs base", "ORT ms", "ORT vs base",
               "mAP50", "mAP50-95", "sparse fp16 MB"]
    lines = []
    for r in result["rows"]:
        lines.append([
            r["name"], f"{r['params']:,}", f"{r['nonzero']:,}", f"{r['macs'] / 1e9:.3f}",
            _fmt_ms(r, "torch"), _fmt_change(r, "torch"), _fmt_ms(r, "ort"), _fmt_change(r, "ort") if "ort_median_ms" in r else "-",
            _fmt_float(r.get("mAP50")), _fmt_float(r.get("mAP50-95")), f"{r['sparse_fp16_bytes'] / 1e6:.2f}",
        ])
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


def _context(result: Mapping[str, Any]) -> str:
    o = result["options"]
    lines = [
        f"- input {o['batch']}x3x{o['imgsz']}x{o['imgsz']}; PyTorch {result['torch_version']}, {o['threads']} threads, "
        f"{o['warmup']} warm-up calls, {o['rounds']} interleaved rounds (order rotating); {result['cpu_count']} CPUs",
        f"- MACs: {result['mac_counter']}. A MACs reduction is not a measured speedup; see the latency columns.",
        "- latency: the fused models (conv + BatchNorm folded) and their ONNX export; median [p10-p90] ms; "
        "'vs base' is the median of per-round time ratios, 'no measurable change' when its 95% bootstrap "
        "confidence interval includes 1.",
    ]
    for engine, check in (result.get("machine") or {}).items():
        if check and check.get("busy"):
            lines.append(f"- {engine} latency {BUSY_LABEL}: {'; '.join(check['reasons'])}. Re-run on a quiet "
                         "machine before reading these figures.")
    if o.get("data"):
        lines.append(f"- accuracy: ultralytics validator on {o['data']} at {o.get('val_imgsz') or o['imgsz']}px")
    return "\n".join(lines)


def write_report(
    result: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    categories: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
    title: str = "modprune comparison",
) -> Path:
    """Write ``report.md``, ``report.json`` and PNG plots into ``out_dir``; return the Markdown path.

    :param categories: per model, ``{category: (params, nonzero)}`` for the sparsity plot.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = dict(result)
    if categories:
        data["categories"] = {m: {c: list(v) for c, v in cats.items()} for m, cats in categories.items()}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))
    plots = _plots(result, categories or {}, out)
    md = [f"# {title}", "", comparison_table(result), "", _context(result), ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(md) + "\n")
    return out / "report.md"


def _plots(result: Mapping[str, Any], categories: Mapping[str, Mapping[str, tuple[int, int]]], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional
        log.warning("matplotlib is not installed: report written without plots")
        return []
    paths = []
    if categories:
        paths.append(_sparsity_plot(plt, categories, out / "sparsity_by_category.png"))
    rows = [r for r in result["rows"] if r.get("mAP50") is not None]
    if rows:
        paths.append(_accuracy_plot(plt, rows, out / "accuracy_vs_macs.png"))
    return paths


def _sparsity_plot(plt: Any, categories: Mapping[str, Mapping[str, tuple[int, int]]], path: Path) -> Path:
    names = list(categories)
    cats = sorted({c for m in categories.values() for c in m})
    base = categories[names[0]]
    fig, ax = plt.subplots(figsize=(max(6, len(cats) * 0.9), 4))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        removed = []
        for c in cats:
            p0, nz0 = base.get(c, (0, 0))
            _, nz = categories[name].get(c, (0, 0))
            removed.append(100 * (1 - nz / nz0) if nz0 else 0.0)
        ax.bar([k + i * width for k in range(len(cats))], removed, width, label=name)
    ax.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(cats))])
    ax.set_xticklabels(cats, rotation=30, ha="right")
    ax.set_ylabel("nonzero parameters removed vs base (%)")
    ax.set_title("Pruning by module category")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy_plot(plt: Any, rows: list[Mapping[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["macs"] / 1e9, r["mAP50"], s=40)
        ax.annotate(r["name"], (r["macs"] / 1e9, r["mAP50"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("GMACs")
    ax.set_ylabel("mAP50")
    ax.set_title("Accuracy vs MACs")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
