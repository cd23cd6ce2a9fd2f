"""Honest CPU/GPU latency comparison of several models in one process.

On a shared machine the same model's latency drifts by 20-40 % between runs, so timing model A, then
model B, then comparing two numbers measures the machine as much as the models. :func:`measure_latency`
instead fixes the thread count, warms every model up, then runs *rounds*: each round calls every model
once, in an order that rotates from round to round, and records the time of each call. Per model it
reports the median and spread (p10/p90, quartiles) and FPS; against a baseline it reports the per-round
ratio ``t_model / t_baseline`` (both timed within the same few milliseconds), whose median and spread are
robust to slow drift, with a seeded bootstrap confidence interval of that median. :func:`verdict` turns the
interval into words: no measurable change when it includes 1.0.

At least :data:`MIN_ROUNDS` rounds run. A busy-machine detector (:mod:`modprune.measure.machine`: process
CPU time against wall time, load against cores, spread) watches the timed region; on a busy machine the
result says ``reliable: False`` and every verdict reads "unreliable: machine busy". A CUDA input times the
GPU with CUDA events around each call (synchronised); see :func:`modprune.measure.gpu.measure_cuda`
for fp32/fp16 and several batch sizes.

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
from modprune.measure.machine import BUSY_LABEL, MachineProbe

__all__ = ["CI_LEVEL", "MIN_ROUNDS", "bootstrap_ci", "measure_latency", "verdict", "spread_stats"]

LOG = logging.getLogger(__name__)

#: The fewest timed rounds :func:`measure_latency` runs (a median and its interval need a sample).
MIN_ROUNDS = 10
#: Confidence level of the bootstrap intervals.
CI_LEVEL = 0.95


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
    min_rounds: int = MIN_ROUNDS,
    threads: int | None = None,
    baseline: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    resamples: int = 2000,
    seed: int = 0,
    check_machine: bool = True,
) -> dict[str, Any]:
    """Time several models in interleaved, order-rotating rounds and compare them to a baseline.

    Args:
        models: Name -> ``nn.Module``, callable, or ONNX Runtime session. Insertion order is kept.
        example_input: Input passed to every model (a tensor; converted to numpy for ONNX sessions). A CUDA
            tensor times on the GPU: each call between two CUDA events, synchronised.
        warmup: Untimed calls per model before timing (>= 0).
        rounds: Timed rounds (>= 3); each round calls every model once. At least ``min_rounds`` run.
        min_rounds: The fewest rounds that run whatever ``rounds`` says (default :data:`MIN_ROUNDS`; >= 3).
        threads: torch intra-op threads while timing (restored afterwards; None keeps the current count,
            still recorded). ONNX Runtime sessions use their own (``onnx_export.ort_session``).
        baseline: Model the ratios are taken against (default: the first).
        inputs: Optional per-model inputs overriding ``example_input`` (e.g. a numpy dict for ONNX).
        timer: Clock returning seconds (injectable for tests; CPU runs only).
        resamples, seed: Bootstrap resamples for the confidence intervals (>= 100), and its seed.
        check_machine: Run the busy-machine detector (:mod:`modprune.measure.machine`); when it fires,
            every ratio is marked ``reliable: False`` and :func:`verdict` says so.

    Returns:
        ``{"threads", "warmup", "rounds", "rounds_requested", "baseline", "order", "device", "ci_level",
        "machine", "reliable", "models": {name: {"median_ms", ..., "ci_low_ms", "ci_high_ms", "fps",
        "samples_ms"}}, "ratios": {name: {"median", ..., "ci_low", "ci_high", "reliable", "samples"}}}``;
        a ratio is ``t_name / t_baseline`` per round (below 1 = faster), its CI the 95% bootstrap interval
        of the median; the baseline has no ratio entry.
    """
    _check_args(models, warmup, rounds, threads, baseline)
    _check_bootstrap(min_rounds, resamples)
    names = list(models)
    base = baseline or names[0]
    n_threads = threads or torch.get_num_threads()
    n_rounds = max(rounds, min_rounds)
    cuda = isinstance(example_input, torch.Tensor) and example_input.is_cuda
    probe = MachineProbe(n_threads, cpu_bound=not cuda) if check_machine else None
    times = _time_models(models, example_input, inputs, (warmup, n_rounds, n_threads), _clock(cuda, timer), probe)
    summary = _summarise(times, base, resamples, seed)
    check = probe.check(_rel_spread(summary["models"])) if probe is not None else None
    reliable = check is None or not check.busy
    for ratio in summary["ratios"].values():
        ratio["reliable"] = reliable
    result: dict[str, Any] = {"threads": n_threads, "warmup": warmup, "rounds": n_rounds, "rounds_requested": rounds,
                              "baseline": base, "order": "rotating", "device": "cuda" if cuda else "cpu",
                              "ci_level": CI_LEVEL, "machine": check.to_dict() if check else None,
                              "reliable": reliable, **summary}
    _log_result(result, names)
    return result


def _time_models(
    models: Mapping[str, Any],
    example_input: Any,
    inputs: Mapping[str, Any] | None,
    schedule: tuple[int, int, int],
    clock: "Clock",
    probe: MachineProbe | None,
) -> Any:
    """Run the interleaved rounds (``schedule`` = warmup, rounds, threads); models left as they were."""
    runners, restores = {}, []
    for name in models:
        run, restore = _runner(models[name], (inputs or {}).get(name, example_input))
        runners[name] = run
        restores.append(restore)
    warmup, n_rounds, n_threads = schedule
    try:
        return _timed_rounds(runners, warmup, n_rounds, n_threads, clock, probe)
    finally:
        for restore in restores:
            restore()


def _check_bootstrap(min_rounds: Any, resamples: Any) -> None:
    for arg, value, lo in (("min_rounds", min_rounds, 3), ("resamples", resamples, 100)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{arg}={value!r} must be an integer >= {lo}", obj=value)


def _log_result(result: Mapping[str, Any], names: list[str]) -> None:
    LOG.info("latency (%s, %d threads, %d rounds): %s", result["device"], result["threads"], result["rounds"],
             ", ".join(f"{n} {result['models'][n]['median_ms']:.2f} ms" for n in names))
    if not result["reliable"]:
        LOG.warning("%s: %s", BUSY_LABEL, "; ".join(result["machine"]["reasons"]))


def _rel_spread(models: Mapping[str, Mapping[str, float]]) -> float:
    """The largest IQR / median over the models' timings."""
    return max((m["q75_ms"] - m["q25_ms"]) / m["median_ms"] if m["median_ms"] > 0 else 0.0 for m in models.values())


Clock = tuple[Callable[[Callable[[], Any]], float], Callable[[], None]]


def _clock(cuda: bool, timer: Callable[[], float]) -> Clock:
    """``(time_call(fn) -> seconds, sync())``: CUDA events around the call on the GPU, else ``timer``."""
    if cuda:
        def time_cuda(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return time_cuda, torch.cuda.synchronize

    def time_cpu(fn: Callable[[], Any]) -> float:
        t0 = timer()
        fn()
        return timer() - t0

    return time_cpu, lambda: None


def _timed_rounds(
    runners: Mapping[str, Callable[[], Any]],
    warmup: int,
    rounds: int,
    n_threads: int,
    clock: Clock,
    probe: MachineProbe | None,
) -> dict[str, np.ndarray]:
    """Warm every runner up, then time ``rounds`` rounds of one call each, in rotating order, with
    ``n_threads`` torch threads and the garbage collector off (both restored afterwards)."""
    names = list(runners)
    times = {name: np.empty(rounds, dtype=np.float64) for name in names}
    time_call, sync = clock
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
            if probe is not None:
                probe.start()
            for r in range(rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    times[name][r] = time_call(runners[name])
                if probe is not None:
                    probe.sample()
            if probe is not None:
                probe.stop()
    finally:
        if gc_was_enabled:
            gc.enable()
        torch.set_num_threads(old_threads)
    return times


def bootstrap_ci(samples: Any, *, resamples: int = 2000, seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float]:
    """``level`` (default 95%) percentile-bootstrap confidence interval of the median of ``samples``.

    ``resamples`` resamples with replacement from a generator seeded with ``seed`` (same input, same
    interval).
    """
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ConfigError("cannot bootstrap an empty sample", obj=samples)
    rng = np.random.default_rng(seed)
    medians = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)


def _summarise(times: Mapping[str, np.ndarray], base: str, resamples: int, seed: int) -> dict[str, Any]:
    """``{"models": per-model stats in ms and fps, "ratios": per-round ratios to ``base``}``."""
    models: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for name, seconds in times.items():
        ms = seconds * 1e3
        stats = {f"{k}_ms": v for k, v in spread_stats(ms).items()}
        stats["ci_low_ms"], stats["ci_high_ms"] = bootstrap_ci(ms, resamples=resamples, seed=seed)
        stats["fps"] = 1e3 / stats["median_ms"] if stats["median_ms"] > 0 else float("inf")
        stats["samples_ms"] = ms.tolist()
        models[name] = stats
    for name, seconds in times.items():
        if name != base:
            ratio = seconds / np.maximum(times[base], 1e-12)
            lo, hi = bootstrap_ci(ratio, resamples=resamples, seed=seed)
            ratios[name] = {**spread_stats(ratio), "ci_low": lo, "ci_high": hi, "samples": ratio.tolist()}
    return {"models": models, "ratios": ratios}


def verdict(ratio_stats: Mapping[str, Any], *, low: str | None = None, high: str | None = None) -> str:
    """Words for a ratio's stats (``t_model / t_baseline``, from :func:`measure_latency`'s ``ratios``).

    The interval ``[low, high]`` defaults to the bootstrap confidence interval of the median ratio
    (``ci_low``/``ci_high``), or ``p10``/``p90`` for stats without one. Returns ``"no measurable change"``
    when the interval includes 1.0, else ``"faster by X%"`` or ``"slower by X%"`` from the median ratio
    (X = ``|1 - median| * 100``, one decimal). Stats marked ``reliable: False`` (measured on a busy
    machine) read ``"unreliable: machine busy (measured: ...)"``.
    """
    if low is None and high is None:
        low, high = ("ci_low", "ci_high") if "ci_low" in ratio_stats and "ci_high" in ratio_stats else ("p10", "p90")
    low, high = low or "p10", high or "p90"
    try:
        lo, hi, med = float(ratio_stats[low]), float(ratio_stats[high]), float(ratio_stats["median"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"ratio_stats needs numeric '{low}', '{high}' and 'median' entries (as in "
                          f"measure_latency()['ratios'][name]); got {ratio_stats!r}", obj=ratio_stats) from e
    if lo > hi:
        raise ConfigError(f"ratio spread is inverted ({low}={lo} > {high}={hi})", obj=ratio_stats)
    if lo <= 1.0 <= hi:
        words = "no measurable change"
    elif hi < 1.0:
        words = f"faster by {(1.0 - med) * 100:.1f}%"
    else:
        words = f"slower by {(med - 1.0) * 100:.1f}%"
    if ratio_stats.get("reliable", True) is False:
        return f"{BUSY_LABEL} (measured: {words})"
    return words
