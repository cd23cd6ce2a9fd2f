"""Honest CPU/GPU latency comparison of several models in one process.

On a shared machine the same model's latency drifts by 20-40 % between runs, so timing model A, then
model B, then comparing two numbers measures the machine as much as the models. :func:`measure_latency`
instead fixes the thread count, warms every model up, then runs *rounds*: each round calls every model
once, in an order that rotates from round to round, and records the time of each call. Per model it
reports the median and spread (p10/p90, quartiles) and FPS; against a baseline it reports the per-round
ratio ``t_model / t_baseline`` (both timed within the same few milliseconds), whose median and spread are
robust to slow drift. :func:`verdict` turns a ratio's spread into words: no measurable change when the
spread includes 1.0.

Models may be ``nn.Module`` objects (run in eval mode under ``torch.inference_mode``), any callable taking
the example input, or ONNX Runtime sessions (anything with ``run`` and ``get_inputs``; the input is
converted to numpy once, outside the timed region).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from modprune.exceptions import ConfigError

__all__ = ["measure_latency", "verdict", "spread_stats"]

LOG = logging.getLogger(__name__)


def spread_stats(samples: Any) -> dict[str, float]:
    """Median, mean, min, max, p10, p90 and quartiles of a 1-D sample."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ConfigError("cannot summarise an empty sample", obj=samples)
    p10, q25, med, q75, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    return {"median": float(med), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
            "p10": float(p10), "p90": float(p90), "q25": float(q25), "q75": float(q75)}


def _runner(model: Any, example_input: Any) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A zero-argument call of ``model`` on its input, and a function restoring the model's state."""
    if hasattr(model, "run") and hasattr(model, "get_inputs"):  # onnxruntime.InferenceSession
        x = example_input.detach().cpu().numpy() if isinstance(example_input, torch.Tensor) else example_input
        feed = x if isinstance(x, dict) else {model.get_inputs()[0].name: x}
        return (lambda: model.run(None, feed)), (lambda: None)
    if isinstance(model, nn.Module):
        was_training = model.training
        model.eval()
        return (lambda: model(example_input)), (lambda: model.train(was_training))
    if callable(model):
        return (lambda: model(example_input)), (lambda: None)
    raise ConfigError(f"cannot time a {type(model).__name__}: pass an nn.Module, a callable or an ONNX Runtime "
                      "session", obj=model)


def _check_args(models: Any, warmup: Any, rounds: Any, threads: Any, baseline: Any) -> None:
    """Raise ConfigError for invalid arguments."""
    if not isinstance(models, Mapping) or not models:
        raise ConfigError("models must be a non-empty mapping {name: model or callable}", obj=models)
    for name in models:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"model names must be non-empty strings, got {name!r}", obj=name)
    for arg, value, lo in (("warmup", warmup, 0), ("rounds", rounds, 3)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{arg}={value!r} must be an integer >= {lo}", obj=value)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads={threads!r} must be None or an integer >= 1", obj=threads)
    if baseline is not None and baseline not in models:
        raise ConfigError(f"baseline={baseline!r} is not one of the models {sorted(models)}", obj=baseline)


def measure_latency(
    models: Mapping[str, Any],
    example_input: Any,
    *,
    warmup: int = 5,
    rounds: int = 30,
    threads: int | None = None,
    baseline: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Time several models in interleaved, order-rotating rounds and compare them to a baseline.

    Args:
        models: Name -> ``nn.Module``, callable, or ONNX Runtime session. Insertion order is kept.
        example_input: Input passed to every model (a tensor; converted to numpy for ONNX sessions).
        warmup: Untimed calls per model before timing (>= 0).
        rounds: Timed rounds (>= 3); each round calls every model once.
        threads: torch intra-op threads during the measurement (restored afterwards); None keeps the
            current count (still recorded). ONNX Runtime sessions use their own setting
            (:func:`modprune.evaluate.onnx_export.ort_session`).
        baseline: Model the ratios are taken against (default: the first).
        inputs: Optional per-model inputs overriding ``example_input`` (e.g. a numpy dict for ONNX).
        timer: Clock returning seconds (injectable for tests).

    Returns:
        ``{"threads", "warmup", "rounds", "baseline", "order": "rotating",
        "models": {name: {"median_ms", "mean_ms", "min_ms", "max_ms", "p10_ms", "p90_ms", "q25_ms",
        "q75_ms", "fps", "samples_ms"}},
        "ratios": {name: {"median", "mean", "min", "max", "p10", "p90", "q25", "q75", "samples"}}}``
        where each ratio is ``t_name / t_baseline`` per round (below 1 = faster than the baseline); the
        baseline itself has no ratio entry.
    """
    _check_args(models, warmup, rounds, threads, baseline)
    names = list(models)
    base = baseline or names[0]
    n_threads = threads or torch.get_num_threads()
    runners, restores = {}, []
    for name in names:
        run, restore = _runner(models[name], (inputs or {}).get(name, example_input))
        runners[name] = run
        restores.append(restore)
    try:
        times = _timed_rounds(runners, warmup, rounds, n_threads, _sync_fn(example_input), timer)
    finally:
        for restore in restores:
            restore()
    result: dict[str, Any] = {"threads": n_threads, "warmup": warmup, "rounds": rounds, "baseline": base,
                              "order": "rotating", **_summarise(times, base)}
    LOG.info("latency (%d threads, %d rounds): %s", n_threads, rounds,
             ", ".join(f"{n} {result['models'][n]['median_ms']:.2f} ms" for n in names))
    return result


def _timed_rounds(
    runners: Mapping[str, Callable[[], Any]],
    warmup: int,
    rounds: int,
    n_threads: int,
    sync: Callable[[], None],
    timer: Callable[[], float],
) -> dict[str, np.ndarray]:
    """Warm every runner up, then time ``rounds`` rounds of one call each, in rotating order, with
    ``n_threads`` torch threads and the garbage collector off (both restored afterwards)."""
    names = list(runners)
    times = {name: np.empty(rounds, dtype=np.float64) for name in names}
    old_threads = torch.get_num_threads()
    gc_was_enabled = gc.isenabled()
    try:
        torch.set_num_threads(n_threads)
        with torch.inference_mode():
            for name in names:
                for _ in range(warmup):
                    runners[name]()
                sync()
            gc.collect()
            gc.disable()
            for r in range(rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    t0 = timer()
                    runners[name]()
                    sync()
                    times[name][r] = timer() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
        torch.set_num_threads(old_threads)
    return times


def _summarise(times: Mapping[str, np.ndarray], base: str) -> dict[str, Any]:
    """``{"models": per-model stats in ms and fps, "ratios": per-round ratios to ``base``}``."""
    models: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for name, seconds in times.items():
        ms = seconds * 1e3
        stats = {f"{k}_ms": v for k, v in spread_stats(ms).items()}
        stats["fps"] = 1e3 / stats["median_ms"] if stats["median_ms"] > 0 else float("inf")
        stats["samples_ms"] = ms.tolist()
        models[name] = stats
    for name, seconds in times.items():
        if name != base:
            ratio = seconds / np.maximum(times[base], 1e-12)
            ratios[name] = {**spread_stats(ratio), "samples": ratio.tolist()}
    return {"models": models, "ratios": ratios}


def verdict(ratio_stats: Mapping[str, float], *, low: str = "p10", high: str = "p90") -> str:
    """Words for a ratio's stats (``t_model / t_baseline``, from :func:`measure_latency`'s ``ratios``).

    Returns ``"no measurable change"`` when the spread ``[low, high]`` (default p10..p90) includes 1.0,
    else ``"faster by X%"`` or ``"slower by X%"`` from the median ratio (X = ``|1 - median| * 100``,
    one decimal).
    """
    try:
        lo, hi, med = float(ratio_stats[low]), float(ratio_stats[high]), float(ratio_stats["median"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"ratio_stats needs numeric '{low}', '{high}' and 'median' entries (as in "
                          f"measure_latency()['ratios'][name]); got {ratio_stats!r}", obj=ratio_stats) from e
    if lo > hi:
        raise ConfigError(f"ratio spread is inverted ({low}={lo} > {high}={hi})", obj=ratio_stats)
    if lo <= 1.0 <= hi:
        return "no measurable change"
    if hi < 1.0:
        return f"faster by {(1.0 - med) * 100:.1f}%"
    return f"slower by {(med - 1.0) * 100:.1f}%"


def _sync_fn(example_input: Any) -> Callable[[], None]:
    """A device synchronisation for CUDA inputs (kernels are asynchronous), else a no-op."""
    if isinstance(example_input, torch.Tensor) and example_input.is_cuda:
        return torch.cuda.synchronize
    return lambda: None
