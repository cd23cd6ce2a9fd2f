"""Measurement: parameter and nonzero counts, MACs, file size, latency, busy-machine detection, and
per-layer latency tables with whole-model latency prediction."""

from modprune.measure.counts import MAC_COUNTER, count_macs, count_nonzero, count_params, file_size
from modprune.measure.latency import CI_LEVEL, MIN_ROUNDS, bootstrap_ci, measure_latency, spread_stats, verdict
from modprune.measure.latency_model import (
    LatencyPrediction,
    Residual,
    calibrate_residual,
    predict_latency,
    vector_multiple,
)
from modprune.measure.latency_table import (
    FormulaLatencyTable,
    LatencyTable,
    LayerKey,
    MeasuredLatencyTable,
    default_cache_dir,
)
from modprune.measure.machine import BUSY_LABEL, MachineCheck, assess_machine

__all__ = [
    "BUSY_LABEL",
    "CI_LEVEL",
    "FormulaLatencyTable",
    "LatencyPrediction",
    "LatencyTable",
    "LayerKey",
    "MeasuredLatencyTable",
    "Residual",
    "MAC_COUNTER",
    "MIN_ROUNDS",
    "MachineCheck",
    "assess_machine",
    "bootstrap_ci",
    "calibrate_residual",
    "count_macs",
    "count_nonzero",
    "count_params",
    "default_cache_dir",
    "file_size",
    "measure_latency",
    "predict_latency",
    "spread_stats",
    "vector_multiple",
    "verdict",
]
