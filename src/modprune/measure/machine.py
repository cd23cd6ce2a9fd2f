"""Is the machine busy? Signals gathered around a timed region, and the decision they lead to.

A latency figure measured while other processes compete for the CPU says more about the machine than
about the model. Three signals, each cheap and available without privileges:

- **CPU time against wall time** of this process over the timed region (``time.process_time``, all
  threads). A compute-bound CPU measurement that keeps one core busy has a ratio close to 1 or more
  (more with several threads); well below 1 means the process waited for a core.
- **Load**: the 1-minute load average (lags by tens of seconds) and the number of runnable tasks
  sampled between rounds (``/proc/loadavg`` on Linux, instantaneous), against the number of cores, with
  this measurement's own threads subtracted.
- **Spread** of the timings: the interquartile range over the median of each model's samples.

:func:`assess_machine` turns the numbers into a verdict (pure: testable on synthetic inputs);
:class:`MachineProbe` gathers them.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["BUSY_LABEL", "MachineCheck", "MachineProbe", "Thresholds", "assess_machine", "runnable_tasks"]

#: The words every table and report shows instead of a latency figure measured on a busy machine.
BUSY_LABEL = "unreliable: machine busy"


@dataclass(frozen=True)
class Thresholds:
    """When a signal counts as "busy".

    ``min_cpu_wall``: CPU/wall ratio below this (CPU runs only); ``max_other_load``: other runnable tasks
    per core above this (1.0: every core already has someone else's work); ``max_rel_spread``: a model's
    IQR / median above this.
    """

    min_cpu_wall: float = 0.85
    max_other_load: float = 1.0
    max_rel_spread: float = 0.25


@dataclass(frozen=True)
class MachineCheck:
    """The verdict and the numbers behind it (``reasons`` empty when the machine looked quiet)."""

    busy: bool
    reasons: tuple[str, ...]
    cores: int
    own_threads: int
    cpu_wall_ratio: float | None = None
    load1: float | None = None
    runnable_median: float | None = None
    rel_spread: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``reasons`` as a list)."""
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def assess_machine(
    *,
    cores: int,
    own_threads: int = 1,
    cpu_s: float | None = None,
    wall_s: float | None = None,
    load1: float | None = None,
    runnable: list[float] | None = None,
    rel_spread: float | None = None,
    thresholds: Thresholds = Thresholds(),
) -> MachineCheck:
    """Decide whether a measurement ran on a busy machine; every signal is optional.

    Args:
        cores: CPU cores of the machine (``os.cpu_count()``).
        own_threads: threads this measurement itself keeps busy (subtracted from the load).
        cpu_s, wall_s: process CPU seconds and wall seconds of the timed region (CPU runs only; leave
            them out for GPU runs, where the CPU mostly waits).
        load1: 1-minute load average (includes this process).
        runnable: runnable-task counts sampled during the region (they include this measurement's threads).
        rel_spread: the largest IQR / median over the models timed.
    """
    t, reasons = thresholds, []
    own = max(1, own_threads)
    ratio = cpu_s / wall_s if cpu_s is not None and wall_s else None
    if ratio is not None and ratio < t.min_cpu_wall:
        reasons.append(f"the process ran {100 * ratio:.0f}% of the wall time (it waited for a core)")
    if load1 is not None and (load1 - own) / cores >= t.max_other_load:
        reasons.append(f"load average {load1:.2f} on {cores} cores")
    run_med = float(np.median(runnable)) if runnable else None
    if run_med is not None and (run_med - own) / cores >= t.max_other_load:
        reasons.append(f"{run_med - own:.0f} other runnable tasks on {cores} cores")
    if rel_spread is not None and rel_spread > t.max_rel_spread:
        reasons.append(f"timings spread by {100 * rel_spread:.0f}% (IQR / median)")
    return MachineCheck(busy=bool(reasons), reasons=tuple(reasons), cores=cores, own_threads=own,
                        cpu_wall_ratio=ratio, load1=load1, runnable_median=run_med, rel_spread=rel_spread)


def runnable_tasks() -> int | None:
    """Tasks runnable right now, system-wide (``/proc/loadavg``'s 4th field); None where unavailable."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def _load1() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # not on every platform
        return None


class MachineProbe:
    """Gathers the signals of :func:`assess_machine` around a timed region.

    ``start()`` before the region, ``sample()`` between rounds (outside the timed calls), ``stop()`` after,
    then :meth:`check`.
    """

    def __init__(self, own_threads: int = 1, *, cpu_bound: bool = True) -> None:
        self.own_threads = own_threads
        self.cpu_bound = cpu_bound
        self.runnable: list[float] = []
        self.loads: list[float] = []
        self._cpu0 = self._wall0 = 0.0
        self.cpu_s = self.wall_s = 0.0

    def start(self) -> None:
        """Start the CPU and wall clocks and take a first load sample."""
        self._sample_load()
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()

    def sample(self) -> None:
        """Record the number of runnable tasks now."""
        n = runnable_tasks()
        if n is not None:
            self.runnable.append(float(n))

    def stop(self) -> None:
        """Stop the clocks and take a last load sample."""
        self.cpu_s = time.process_time() - self._cpu0
        self.wall_s = time.perf_counter() - self._wall0
        self._sample_load()

    def _sample_load(self) -> None:
        load = _load1()
        if load is not None:
            self.loads.append(load)

    def check(self, rel_spread: float | None = None, thresholds: Thresholds = Thresholds()) -> MachineCheck:
        """The verdict on the region measured (see :func:`assess_machine`)."""
        return assess_machine(
            cores=os.cpu_count() or 1, own_threads=self.own_threads,
            cpu_s=self.cpu_s if self.cpu_bound else None, wall_s=self.wall_s if self.cpu_bound else None,
            load1=max(self.loads) if self.loads else None, runnable=self.runnable or None,
            rel_spread=rel_spread, thresholds=thresholds,
        )
