"""Measurement: parameter and nonzero counts, MACs, file size, latency."""

from modprune.measure.counts import MAC_COUNTER, count_macs, count_nonzero, count_params, file_size
from modprune.measure.latency import measure_latency, spread_stats, verdict

__all__ = [
    "MAC_COUNTER",
    "count_macs",
    "count_nonzero",
    "count_params",
    "file_size",
    "measure_latency",
    "spread_stats",
    "verdict",
]
