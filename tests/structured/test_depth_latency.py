"""``depth+structured`` with a latency target: the depth stage's saving is measured, the structured stage
removes the rest (deterministic fake latency table: no timing)."""

from __future__ import annotations

import pytest
import torch

import modprune
from modprune.measure import FormulaLatencyTable, predict_latency

pytest.importorskip("ultralytics")


def test_depth_then_channels_reach_a_latency_target(build, pm) -> None:
    model = build("yolov8n")
    x = torch.zeros(1, 3, 64, 64)
    table = FormulaLatencyTable(per_mac=1e-6, per_layer=0.01, per_output=1e-5)
    dense_ms = predict_latency(model, x, table).total_ms
    predictions = model.eval()(x)[0].shape
    config = modprune.PruneConfig(method="depth+structured", target=0.4, target_kind="latency", importance="l2",
                                  pruner_options={"depth_share": 0.3, "align": 8})
    report = modprune.prune(model, config, x, pm=pm, latency_table=table)
    after_ms = predict_latency(model, x, table).total_ms  # same formula, computed independently
    assert abs(report.achieved - 0.4) <= 0.02, report.notes
    assert report.achieved == pytest.approx(1 - after_ms / dense_ms, abs=0.005)
    assert any(n.startswith("depth: step 1/1: removed") for n in report.notes)
    assert any(n.startswith("depth: latency") and "predicted" in n for n in report.notes)
    assert any(n.startswith("structured: target") for n in report.notes)
    assert report.latency["start_ms"] == pytest.approx(dense_ms) and report.latency["depth_removed"] > 0
    assert model.eval()(x)[0].shape == predictions


def test_depth_share_zero_is_the_structured_latency_target(build, pm) -> None:
    x = torch.zeros(1, 3, 64, 64)
    table = FormulaLatencyTable(per_mac=1e-6, per_layer=0.01, per_output=1e-5)
    config = modprune.PruneConfig(method="depth+structured", target=0.3, target_kind="latency", importance="l2",
                                  pruner_options={"depth_share": 0, "align": 8})
    report = modprune.prune(build("yolov8n"), config, x, pm=pm, latency_table=table)
    assert abs(report.achieved - 0.3) <= 0.02 and not any(n.startswith("depth: step") for n in report.notes)
