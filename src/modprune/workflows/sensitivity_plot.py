"""The sensitivity plot: ratio against metric, one line per unit (matplotlib, the ``plots`` extra)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from modprune.exceptions import ConfigError
from modprune.optional import require

if TYPE_CHECKING:  # pragma: no cover
    from modprune.workflows.sensitivity import SensitivityResult

__all__ = ["DEFAULT_METRICS", "plot_sensitivity"]

#: The panels drawn when the result has these metrics (else its first two).
DEFAULT_METRICS = ("mAP50", "val_loss")


def _chosen(result: SensitivityResult, metrics: Sequence[str] | None) -> list[str]:
    available = result.metrics()
    if metrics is None:
        chosen = [m for m in DEFAULT_METRICS if m in available] or available[:2]
    else:
        chosen = list(metrics)
    unknown = [m for m in chosen if m not in available]
    if unknown or not chosen:
        raise ConfigError(f"cannot plot metrics {unknown or chosen}; the proxy gave {', '.join(available) or 'none'}",
                          unknown)
    return chosen


def plot_sensitivity(result: SensitivityResult, path: str | os.PathLike[str],
                     metrics: Sequence[str] | None = None, *, fmt: str | None = None) -> None:
    """Write a PNG (or any format matplotlib infers from ``path``) of ``result``.

    :raises MissingDependencyError: matplotlib is not installed (``pip install 'modprune[plots]'``).
    """
    require("matplotlib", "the sensitivity plot")
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    chosen = _chosen(result, metrics)
    fig, axes = plt.subplots(1, len(chosen), figsize=(5.5 * len(chosen), 4), squeeze=False)
    for ax, metric in zip(axes[0], chosen):
        for curve in result.curves:
            points = [p for p in curve.points if metric in p]
            if points:
                ax.plot([0.0] + [p["ratio"] for p in points], [result.baseline[metric]] + [p[metric] for p in points],
                        marker="o", label=curve.unit)
        ax.set_xlabel(f"fraction of the {result.by}'s channels removed")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"sensitivity by {result.by} (no fine-tuning)")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110, format=fmt)
    plt.close(fig)
