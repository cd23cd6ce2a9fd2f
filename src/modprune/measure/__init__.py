"""Measurement: parameter and nonzero counts, MACs, file size, latency, busy-machine detection."""

from modprune.measure.counts import MAC_COUNTER, count_macs, count_nonzero, count_params, file_size
from modprune.measure.latency import CI_LEVEL, MIN_ROUNDS, bootstrap_ci, measure_latency, spread_stats, verdict
from modprune.measure.machine import BUSY_LABEL, MachineCheck, assess_machine

__all__ = [
    "BUSY_LABEL",
    "CI_LEVEL",
    "MAC_COUNTER",
    "MIN_ROUNDS",
    "MachineCheck",
    "assess_machine",
    "bootstrap_ci",
    "count_macs",
    "count_nonzero",
    "count_params",
    "file_size",
    "measure_latency",
    "spread_stats",
    "verdict",
]
