"""The honest baseline: the same architecture made natively thin to a pruned model's MACs, trained from scratch.

Pruning is worth it only if it beats training a smaller model. :func:`thin_baseline` takes an
ultralytics-style model yaml (stock, or one a plugin builds, such as TokenC3-LSNet's) and a target
number of MACs (a pruned model's), finds by bisection the width multiple whose natively thin model has
that many MACs at the same input size (:func:`match_width`, MACs from :func:`modprune.measure.count_macs`),
builds that model with random weights (nothing is copied from the base or the pruned model) and trains
it with :func:`modprune.integrations.ultralytics.trainer.finetune` for the epochs given (use base
training plus fine-tuning epochs, so both sides get the same training).

The width multiple is changed in the yaml's ``scales`` entry for the model's scale (its depth multiple
and channel cap are kept) or in its top-level ``width_multiple``; the thin yaml is written next to the
results and built with :func:`modprune.load`, so the plugin that understands the blocks builds it.
Channels are rounded up to multiples of 8 by the parser, so MACs move in steps: the width found is the
one whose MACs are closest to the target, and :attr:`ThinMatch.relative_error` says how close. Steps can
be large on nano models at small inputs (yolov8n at 64 px: a 128-channel layer going from 24 to 32
channels is a 22% jump in MACs), so the error can exceed the tolerance (a warning says so); at 128 px
and -40% MACs yolov8n matched within 1.5%.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Union

import torch
import yaml
from torch import nn

from modprune.exceptions import ConfigError, ModelLoadError
from modprune.measure import count_macs
from modprune.model_yaml import dense_cfg

__all__ = ["ThinMatch", "build_thin", "file_name", "match_width", "model_cfg", "scaled_cfg", "thin_baseline",
           "width_of"]

log = logging.getLogger(__name__)

CfgSource = Union[str, os.PathLike, Mapping[str, Any], nn.Module]


@dataclass(frozen=True)
class ThinMatch:
    """The width multiple found for a MACs target (see :func:`match_width`).

    :param width: the width multiple of the thin model.
    :param macs: its MACs at ``imgsz``.
    :param target_macs: the MACs it was matched to.
    :param imgsz: the square input size the MACs were counted at.
    :param base_width: the yaml's own width multiple.
    :param steps: how many widths were built and counted.
    :param yaml_path: the thin model's yaml (set by :func:`thin_baseline`), else None.
    """

    width: float
    macs: int
    target_macs: int
    imgsz: int
    base_width: float
    steps: int
    yaml_path: str | None = None

    @property
    def relative_error(self) -> float:
        """``macs / target_macs - 1`` (positive: the thin model has more MACs than the target)."""
        return self.macs / self.target_macs - 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, with the relative error."""
        return {"width": self.width, "macs": self.macs, "target_macs": self.target_macs, "imgsz": self.imgsz,
                "base_width": self.base_width, "steps": self.steps, "yaml_path": self.yaml_path,
                "relative_error": self.relative_error}


def model_cfg(source: CfgSource) -> dict[str, Any]:
    """The model dict of ``source``: a model yaml (path, or a bare name ultralytics or a plugin ships, such as
    ``yolov8n.yaml``), a model dict, or a model built from one (ultralytics keeps it as ``model.yaml``).

    :raises ModelLoadError: ``source`` has no model yaml (a model built in Python, or an unreadable file).
    """
    if isinstance(source, nn.Module):
        cfg = getattr(source, "yaml", None)
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"{type(source).__name__} carries no model yaml (model.yaml); pass the yaml it was "
                                 "built from instead", source)
        return copy.deepcopy(dense_cfg(cfg))  # a pruned checkpoint's yaml is marked: the dense yaml is wanted
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    from modprune import load  # noqa: PLC0415 - builds it the way a plugin understands

    return model_cfg(load(source))


def _scale_key(cfg: Mapping[str, Any]) -> str | None:
    """The ``scales`` entry the parser uses (the ``scale`` key, else the first entry), or None without scales."""
    scales = cfg.get("scales")
    if not scales:
        return None
    scale = cfg.get("scale") or next(iter(scales))
    if scale not in scales:
        raise ConfigError(f"model yaml scale {scale!r} is not among its scales {sorted(scales)}", scale)
    return str(scale)


def width_of(cfg: Mapping[str, Any]) -> float:
    """The width multiple a model dict builds with."""
    key = _scale_key(cfg)
    return float(cfg["scales"][key][1]) if key is not None else float(cfg.get("width_multiple", 1.0))


def scaled_cfg(cfg: Mapping[str, Any], width: float, nc: int | None = None) -> dict[str, Any]:
    """A copy of ``cfg`` that builds with width multiple ``width`` (depth and channel cap kept).

    With ``scales``, only the model's own scale is kept (so a file name without a scale letter builds it).
    """
    if not width > 0:
        raise ConfigError(f"width multiple {width!r} must be positive", width)
    out = copy.deepcopy(dict(cfg))
    key = _scale_key(out)
    if key is not None:
        depth, _, max_channels = out["scales"][key]
        out["scales"] = {key: [depth, float(width), max_channels]}
        out["scale"] = key
    else:
        out["width_multiple"] = float(width)
    if nc is not None:
        out["nc"] = int(nc)
    return out


def build_thin(cfg: Mapping[str, Any], width: float, path: str | os.PathLike[str], *, nc: int | None = None,
               seed: int | None = None) -> nn.Module:
    """Write the yaml of ``cfg`` at width multiple ``width`` to ``path`` and build it with random weights.

    :param seed: seeds torch before the build (the initial weights), when given.
    """
    from modprune import load  # noqa: PLC0415

    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{str(path)!r}: the thin model's yaml needs a .yaml suffix", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(scaled_cfg(cfg, width, nc), sort_keys=False))
    if seed is not None:
        torch.manual_seed(seed)
    return load(path).float()


def _macs_at(cfg: Mapping[str, Any], width: float, workdir: Path, imgsz: int) -> int:
    model = build_thin(cfg, width, workdir / file_name(cfg, "probe"))
    return count_macs(model, torch.zeros(1, 3, imgsz, imgsz))


#: A width that does not build (a block needing, e.g., a multiple of 16 channels) is replaced by the nearest
#: one that does, searched in steps of this fraction of the width, this many each way.
_NUDGE, _NUDGES = 0.02, 8


def _probe(cfg: Mapping[str, Any], width: float, bracket: tuple[float, float], workdir: Path,
           imgsz: int) -> tuple[float, int] | None:
    """``(width, MACs)`` at ``width`` or, when that width does not build, at the nearest width inside
    ``bracket`` that does; None when none of those builds."""
    from modprune.exceptions import ModpruneError  # noqa: PLC0415

    candidates = [width] + [width * (1 + sign * k * _NUDGE) for k in range(1, _NUDGES + 1) for sign in (1, -1)]
    for w in candidates:
        if not bracket[0] < w < bracket[1]:
            continue
        try:
            return w, _macs_at(cfg, w, workdir, imgsz)
        except (ModpruneError, ValueError, RuntimeError) as exc:
            log.debug("width %.5f does not build: %s", w, exc)
    return None


def file_name(cfg: Mapping[str, Any], tag: str) -> str:
    """``<stem of the yaml it came from>-<tag>.yaml``: ultralytics reads a model's scale from its file name."""
    stem = Path(str(cfg.get("yaml_file") or "model.yaml")).stem
    return f"{stem}-{tag}.yaml"


def _next_width(lo: tuple[float, int], hi: tuple[float, int], target: int) -> float:
    """Interpolate in log MACs against log width inside the bracket (MACs grow roughly as width squared);
    plain bisection when the interpolated point hugs an end of the bracket."""
    import math  # noqa: PLC0415

    (w0, m0), (w1, m1) = lo, hi
    if m0 <= 0 < m1:  # lower end not built yet: MACs ~ width ** 2 from the upper end
        guess = w1 * math.sqrt(target / m1)
        return guess if w0 < guess < w1 else (w0 + w1) / 2
    if m1 > m0 > 0:
        t = (math.log(target) - math.log(m0)) / (math.log(m1) - math.log(m0))
        if 0.05 < t < 0.95:
            return math.exp(math.log(w0) + t * (math.log(w1) - math.log(w0)))
    return (w0 + w1) / 2


#: Probes placed by interpolation before plain bisection takes over (MACs are a step function of the width:
#: channel counts are rounded to multiples of 8, so interpolation stalls next to a step).
_INTERPOLATED = 2
#: The bisection stops when the bracket is narrower than this fraction of the width.
_MIN_BRACKET = 5e-3


def match_width(cfg: Mapping[str, Any], target_macs: int, imgsz: int, workdir: str | os.PathLike[str], *,
                tolerance: float = 0.02, max_steps: int = 12, low: float = 0.01) -> ThinMatch:
    """The width multiple whose model has the MACs closest to ``target_macs`` at ``imgsz``.

    A safeguarded bisection between ``low`` and the yaml's own width (MACs grow with width): each step
    builds the model at a point inside the bracket and
    keeps the part that holds the target, until a width lands within ``tolerance`` (relative) of the
    target, the bracket is narrower than 0.5% of the width, or ``max_steps`` probes were made. The first
    probes are interpolated in log-log space (MACs grow about as width squared), the rest are midpoints.
    A width whose model does not build (blocks with channel constraints) is replaced by the nearest one
    in the bracket that does; when none near it builds, the bracket moves by the width-squared estimate.

    :raises ConfigError: the target is not positive or above the full-width model's MACs.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    base = width_of(cfg)
    full = _macs_at(cfg, base, workdir, imgsz)
    if not 0 < target_macs <= full:
        raise ConfigError(f"target MACs {target_macs} must be positive and at most the full-width model's {full} "
                          f"(at {imgsz}px)", target_macs)
    lo, hi = (float(low), 0), (base, full)
    best, steps = (abs(full - target_macs), base, full), 1
    while steps < max_steps and hi[0] - lo[0] > _MIN_BRACKET * hi[0] and best[0] > tolerance * target_macs:
        mid = _next_width(lo, hi, target_macs) if steps <= _INTERPOLATED else (lo[0] + hi[0]) / 2
        probed = _probe(cfg, mid, (lo[0], hi[0]), workdir, imgsz)
        steps += 1
        if probed is None:  # nothing near the middle builds: place it by MACs ~ width ** 2 from the upper end
            estimate = hi[1] * (mid / hi[0]) ** 2
            lo, hi = ((mid, 0), hi) if estimate < target_macs else (lo, (mid, int(estimate)))
            continue
        mid, macs = probed
        log.debug("width %.5f: %d MACs", mid, macs)
        best = min(best, (abs(macs - target_macs), mid, macs))
        lo, hi = ((mid, macs), hi) if macs < target_macs else (lo, (mid, macs))
    (workdir / file_name(cfg, "probe")).unlink(missing_ok=True)
    _, width, macs = best
    if abs(macs - target_macs) > tolerance * target_macs:
        log.warning("thin width %.4f: %d MACs, %+.1f%% from the target %d; the width multiple moves MACs in steps "
                    "here (channels round to multiples of 8), this is the closest step", width, macs,
                    100 * (macs / target_macs - 1), target_macs)
    log.info("thin width %.4f (yaml %.4f): %d MACs for a target of %d (%+.2f%%) after %d builds", width, base, macs,
             target_macs, 100 * (macs / target_macs - 1), steps)
    return ThinMatch(width=round(width, 6), macs=int(macs), target_macs=int(target_macs), imgsz=int(imgsz),
                     base_width=base, steps=steps)


def thin_baseline(
    source: CfgSource,
    target: int | nn.Module,
    data_yaml: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    epochs: int,
    imgsz: int,
    batch: int = 16,
    seed: int = 0,
    tolerance: float = 0.02,
    finetune_overrides: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, ThinMatch]:
    """Build and train the natively thin model with the MACs of ``target`` (a pruned model, or a MACs count).

    :param source: the architecture: a model yaml, a model dict, or a model carrying its yaml (the base).
    :param target: the pruned model (its MACs are counted at ``imgsz``) or the MACs to match.
    :param data_yaml: the dataset it trains on (its class count sets the head's).
    :param out_dir: where the thin yaml (``<yaml stem>-thin.yaml``) and the training run (``runs/thin``) go.
    :param epochs: training epochs from scratch (base training plus fine-tuning epochs, to be fair).
    :param imgsz: training size, and the size MACs are matched at.
    :param finetune_overrides: other :class:`FinetuneOptions` fields (e.g. ``{"verbose": True}``).
    :returns: the trained thin model (float32, eval mode) and its :class:`ThinMatch` (``yaml_path`` set).
    """
    from modprune.data import check_dataset  # noqa: PLC0415

    out = Path(out_dir).resolve()
    nc = check_dataset(data_yaml).nc
    cfg = model_cfg(source)
    cfg = scaled_cfg(cfg, width_of(cfg), nc)
    if isinstance(target, nn.Module):
        target = count_macs(target, torch.zeros(1, 3, imgsz, imgsz))
    match = match_width(cfg, int(target), imgsz, out, tolerance=tolerance)
    yaml_path = out / file_name(cfg, "thin")
    model = build_thin(cfg, match.width, yaml_path, seed=seed)
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune  # noqa: PLC0415

    options = FinetuneOptions(**{"epochs": epochs, "imgsz": imgsz, "batch": batch, "project_dir": out / "runs",
                                 "name": "thin", "seed": seed, "keep_zeros": False, **dict(finetune_overrides or {})})
    trained = finetune(model, data_yaml, options)
    return trained, replace(match, yaml_path=str(yaml_path))
