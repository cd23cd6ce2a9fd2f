"""Render a comparison (from :func:`modprune.evaluate.compare.compare_models`): a text/Markdown
table, and a report directory with Markdown, JSON and PNG plots."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from modprune.evaluate.plots import write_plots
from modprune.measure.machine import BUSY_LABEL
from modprune.serialization import atomic_path

__all__ = ["comparison_table", "figures", "format_figure", "write_report"]

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


def _fmt_mb(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}"


def figures(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every number in ``data`` (nested dicts and lists; booleans are not numbers) with its key path:
    ``rows[1].torch_median_ms``, ``options.imgsz``; rows are named by their ``name``."""
    if isinstance(data, bool) or data is None:
        return []
    if isinstance(data, (int, float)):
        return [(prefix, data)]
    if isinstance(data, Mapping):
        return [f for k, v in data.items() for f in figures(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(data, (list, tuple)):
        out = []
        for i, v in enumerate(data):
            label = v.get("name") if isinstance(v, Mapping) and v.get("name") else i
            out += figures(v, f"{prefix}[{label}]")
        return out
    return []


def format_figure(value: float) -> str:
    """How :func:`write_report` prints a figure: integers in full, floats to 6 significant digits."""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def comparison_table(result: Mapping[str, Any], *, markdown: bool = True) -> str:
    """One row per model. Latency is ``median [p10-p90] ms``; change columns come from the
    per-round A/B ratio and say "no measurable change" when its spread includes 1."""
    headers = ["model", "params", "nonzero", "GMACs", "torch ms", "torch vs base", "ORT ms", "ORT vs base",
               "mAP50", "mAP50-95", "file MB", "dense fp16 MB", "sparse fp16 MB"]
    lines = []
    for r in result["rows"]:
        lines.append([
            r["name"], f"{r['params']:,}", f"{r['nonzero']:,}", f"{r['macs'] / 1e9:.3f}",
            _fmt_ms(r, "torch"), _fmt_change(r, "torch"), _fmt_ms(r, "ort"), _fmt_change(r, "ort") if "ort_median_ms" in r else "-",
            _fmt_float(r.get("mAP50")), _fmt_float(r.get("mAP50-95")), _fmt_mb(r.get("file_bytes")),
            _fmt_mb(r.get("dense_fp16_bytes")), _fmt_mb(r.get("sparse_fp16_bytes")),
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

    The Markdown has the table, the context, the plots (latency with its spread, accuracy vs MACs,
    parameters removed per category; see :mod:`modprune.evaluate.plots`) and, last, every number of
    the JSON by its key (:func:`figures`).

    :param categories: per model, ``{category: (params, nonzero)}`` for the sparsity plot.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = dict(result)
    if categories:
        data["categories"] = {m: {c: list(v) for c, v in cats.items()} for m, cats in categories.items()}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))
    plots = write_plots(result, categories or {}, out)
    md = [f"# {title}", "", comparison_table(result), "", _context(result), ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    md += ["", "## All figures", "", "Every number in report.json, by its key.", "", "| key | value |", "|---|---:|"]
    md += [f"| `{key}` | {format_figure(value)} |" for key, value in figures(data)]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(md) + "\n")
    return out / "report.md"
