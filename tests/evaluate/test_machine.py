"""The busy-machine detector: its decision on synthetic signals, and firing under a real CPU hog."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch
from torch import nn

from modprune.measure import BUSY_LABEL, assess_machine, measure_latency, verdict
from modprune.measure.machine import MachineProbe, Thresholds, runnable_tasks


def test_quiet_signals_are_not_busy() -> None:
    check = assess_machine(cores=8, own_threads=1, cpu_s=0.99, wall_s=1.0, load1=1.2, runnable=[1, 2, 1],
                           rel_spread=0.05)
    assert not check.busy and check.reasons == ()
    assert check.cpu_wall_ratio == pytest.approx(0.99) and check.runnable_median == 1
    assert assess_machine(cores=2).busy is False  # no signal, no verdict of busy


@pytest.mark.parametrize("signals, words", [
    ({"cpu_s": 0.5, "wall_s": 1.0}, "50% of the wall time"),
    ({"load1": 9.0}, "load average 9.00 on 4 cores"),
    ({"runnable": [6, 7, 6]}, "other runnable tasks"),
    ({"rel_spread": 0.6}, "spread by 60%"),
])
def test_each_signal_alone_fires(signals: dict, words: str) -> None:
    check = assess_machine(cores=4, own_threads=1, **signals)
    assert check.busy and len(check.reasons) == 1 and words in check.reasons[0]


def test_own_threads_do_not_count_as_load() -> None:
    assert not assess_machine(cores=4, own_threads=4, load1=4.5, runnable=[5]).busy
    assert assess_machine(cores=4, own_threads=1, load1=5.0, runnable=[5]).busy


def test_thresholds_are_configurable_and_gpu_runs_skip_cpu_time() -> None:
    assert not assess_machine(cores=2, cpu_s=0.5, wall_s=1.0, thresholds=Thresholds(min_cpu_wall=0.4)).busy
    probe = MachineProbe(1, cpu_bound=False)
    probe.start()
    probe.stop()
    assert probe.check().cpu_wall_ratio is None
    d = assess_machine(cores=2, load1=9.0).to_dict()
    assert d["busy"] is True and isinstance(d["reasons"], list)


def _spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def test_detector_fires_under_a_cpu_hog() -> None:
    """cores + 1 busy-loop processes run for the whole (short) measurement: the figure must be flagged."""
    n = (os.cpu_count() or 1) + 1
    stop_at = time.monotonic() + 30.0
    ctx = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
    hogs = [ctx.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range(n)]
    for p in hogs:
        p.start()
    try:
        time.sleep(0.5)  # let the scheduler spread the hogs
        net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        res = measure_latency({"a": net, "b": net}, torch.randn(1, 3, 64, 64), rounds=40, warmup=2, threads=1)
    finally:
        for p in hogs:
            p.terminate()
        for p in hogs:
            p.join(5)
    assert res["reliable"] is False and res["machine"]["busy"] and res["machine"]["reasons"]
    assert res["ratios"]["b"]["reliable"] is False
    assert verdict(res["ratios"]["b"]).startswith(BUSY_LABEL)


def test_runnable_tasks_reads_a_count() -> None:
    n = runnable_tasks()
    assert n is None or n >= 1
