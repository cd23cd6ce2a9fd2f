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


def test_a_latency_search_keeps_the_depth_stage(build, pm) -> None:
    pytest.importorskip("optuna")
    from modprune.workflows.search import search

    model = build("yolov8n")
    x = torch.zeros(1, 3, 64, 64)
    table = FormulaLatencyTable(per_mac=1e-6, per_layer=0.01, per_output=1e-5)
    with torch.no_grad():
        reference = model.eval()(x)[0]

    def closeness(pruned: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"mse_loss": float(((pruned.eval()(x)[0] - reference) ** 2).mean())}

    base = modprune.PruneConfig(method="depth+structured", importance="l2", default_ratio=0.2,
                                pruner_options={"depth_share": 0.3, "align": 8})
    result = search(model, closeness, x, budget="latency=0.4", objective="mse_loss", trials=2, seed=0, config=base,
                    pm=pm, latency_table=table)
    assert result.config.method == "depth+structured" and result.config.target_kind == "latency"
    report = modprune.prune(build("yolov8n"), result.config, x, pm=pm, latency_table=table)
    assert any(n.startswith("depth: step 1/1: removed") for n in report.notes)
    assert report.achieved == pytest.approx(result.achieved, abs=1e-6) and abs(report.achieved - 0.4) <= 0.02
