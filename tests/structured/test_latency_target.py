"""``target_kind="latency"``: planned and checked on a deterministic fake latency table (no timing), widths
kept on the alignment, predicted-against-measured error in the report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modprune
from modprune.exceptions import ConfigError, UnreachableTargetError
from modprune.measure import FormulaLatencyTable, predict_latency, vector_multiple
from modprune.pruners.structured import StructuredOptions, StructuredPruner

X = torch.randn(1, 3, 32, 32)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, groups=2), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 48, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10))


def fake_table(**kwargs) -> FormulaLatencyTable:
    return FormulaLatencyTable(per_mac=1e-6, per_layer=0.01, per_output=1e-5, **kwargs)


def latency_config(target: float, **kwargs) -> modprune.PruneConfig:
    """Aligned to the fake table's 8 channels whatever this CPU's SIMD width (16 on AVX-512 would make the
    toy net's widths too coarse for the targets below)."""
    kwargs.setdefault("pruner_options", {"align": 8})
    return modprune.PruneConfig(method="structured", target=target, target_kind="latency", importance="l2", **kwargs)


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_latency_target_is_hit_on_a_fake_table(target: float, pm) -> None:
    model = net()
    dense = predict_latency(model, X, fake_table()).total_ms
    report = modprune.prune(model, latency_config(target), X, pm=pm, latency_table=fake_table())
    after = predict_latency(model, X, fake_table()).total_ms  # an independent table, same formula
    assert report.target_kind == "latency"
    assert abs(report.achieved - target) <= 0.02, report.notes
    assert report.achieved == pytest.approx(1 - after / dense)
    assert report.latency["predicted_ms"] == pytest.approx(after) and report.latency["measured_ms"] is None
    assert model(X).shape == (1, 10)
    assert any(n.startswith("step 1/1: widths aligned to") for n in report.notes)


def test_every_pruned_width_is_on_the_alignment(pm) -> None:
    model = net()
    before = [m.out_channels for m in model if isinstance(m, nn.Conv2d)]
    config = latency_config(0.6, pruner_options={"align": 16})
    modprune.prune(model, config, X, pm=pm, latency_table=fake_table(align=16))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    pruned = [m for m, width in zip(convs, before) if m.out_channels != width]
    assert pruned
    for conv in pruned:
        assert (conv.out_channels // conv.groups if conv.groups != conv.out_channels else conv.out_channels) % 16 == 0
    grouped = convs[2]
    assert grouped.groups == 2 and (grouped.out_channels // 2) % 16 == 0  # rounded per group


def test_steps_reach_the_target_too(pm) -> None:
    seen = []
    report = modprune.prune(net(), latency_config(0.5, steps=2), X, pm=pm, latency_table=fake_table(),
                            on_step=lambda step, steps, _m: seen.append(step))
    assert seen == [1, 2] and abs(report.achieved - 0.5) <= 0.02


def test_predicted_against_measured_error_is_reported(pm) -> None:
    slower = fake_table()  # plays the real model: 10% slower than the table's prediction of its layers
    table = fake_table(measure_fn=lambda m, x: 1.1 * predict_latency(m, x, slower).layers_ms)
    report = modprune.prune(net(), latency_config(0.4), X, pm=pm, latency_table=table)
    latency = report.latency
    assert latency["measured_ms"] is not None and latency["prediction_error"] is not None
    assert latency["prediction_error"] == pytest.approx((latency["predicted_ms"] - latency["measured_ms"])
                                                        / latency["measured_ms"])
    assert latency["residual_ms"] > 0  # the 10% the layers do not explain
    assert abs(report.achieved - 0.4) <= 0.02, report.notes
    assert "prediction error" in report.to_markdown()
    assert any("prediction error" in n for n in report.notes)


class NoisyDepthwise(type(fake_table())):
    """The fake table, with its depthwise layers' figures playing timings taken on a busy machine."""

    def is_noisy(self, key) -> bool:
        return key.depthwise


def test_the_report_counts_layer_timings_taken_on_a_busy_machine(pm) -> None:
    slower = fake_table()
    table = NoisyDepthwise(per_mac=1e-6, per_layer=0.01, per_output=1e-5,
                           measure_fn=lambda m, x: 1.1 * predict_latency(m, x, slower).layers_ms)
    report = modprune.prune(net(), latency_config(0.4), X, pm=pm, latency_table=table)
    assert (report.latency["noisy_layer_calls"], report.latency["layer_calls"]) == (1, 6)  # one depthwise conv
    assert any("1 of 6 layer timings behind the prediction were taken on a busy machine" in n for n in report.notes)
    assert "1 of 6 layer timings taken busy" in report.to_markdown()
    quiet = modprune.prune(net(), latency_config(0.4), X, pm=pm, latency_table=fake_table(
        measure_fn=lambda m, x: 1.1 * predict_latency(m, x, slower).layers_ms))
    assert quiet.latency["noisy_layer_calls"] == 0 and not any("busy machine" in n for n in quiet.notes)


def test_unreachable_latency_target_changes_nothing(pm) -> None:
    model = net()
    weights = [p.clone() for p in model.parameters()]
    with pytest.raises(UnreachableTargetError, match="latency target"):
        modprune.prune(model, latency_config(0.9, max_ratio=0.2), X, pm=pm, latency_table=fake_table())
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_protected_modules_stay_untouched(pm) -> None:
    model = net()
    kept = model[3].weight.clone()
    modprune.prune(model, latency_config(0.3, protect_modules=("3",)), X, pm=pm, latency_table=fake_table())
    assert torch.equal(model[3].weight, kept)


def test_options_and_kinds() -> None:
    assert "latency" in StructuredPruner.target_kinds
    assert StructuredOptions().alignment() == vector_multiple()
    assert StructuredOptions(round_to=4).alignment() == 4
    assert StructuredOptions(align="none").alignment() == 1
    assert StructuredOptions(align=16, round_to=4).alignment() == 16
    for bad in ({"align": "x"}, {"align": 0}, {"latency_backend": "gpu"}, {"latency_threads": 0}):
        with pytest.raises(ConfigError, match="pruner_options"):
            StructuredOptions(**bad)


def test_a_table_of_the_wrong_type_is_refused(pm) -> None:
    with pytest.raises(ConfigError, match="LatencyTable"):
        modprune.prune(net(), latency_config(0.3), X, pm=pm, latency_table=object())


def test_unstructured_refuses_a_latency_target(pm) -> None:
    config = modprune.PruneConfig(method="unstructured", target=0.3, target_kind="latency")
    with pytest.raises(ConfigError, match="latency"):
        modprune.prune(net(), config, X, pm=pm)


def test_report_carries_latency_but_its_digest_does_not(pm) -> None:
    import dataclasses

    report = modprune.prune(net(), latency_config(0.3), X, pm=pm, latency_table=fake_table())
    data = report.to_dict()
    assert data["latency"]["start_ms"] > data["latency"]["predicted_ms"] > 0
    assert "latency" in report.to_markdown()
    other = dataclasses.replace(report, latency={**report.latency, "measured_ms": 1.0})
    assert other.digest() == report.digest()


def wide_net() -> nn.Sequential:
    """Wide enough that 8-channel steps move the latency by a few points at most."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.Conv2d(128, 96, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10))


def test_a_measured_overshoot_is_replanned_from_the_unpruned_model(pm) -> None:
    """The "real model" saves 1.5x what the table predicts: the plan for 0.3 measures about 0.45 removed,
    which no correction can undo; the run is pruned again from the unpruned model, aiming short."""
    dense_ms = predict_latency(wide_net(), X, fake_table()).layers_ms

    def faster(model, x):  # removed latency 1.5x the table's estimate
        return dense_ms - 1.5 * (dense_ms - predict_latency(model, x, fake_table()).layers_ms)

    model = wide_net()
    report = modprune.prune(model, latency_config(0.3), X, pm=pm, latency_table=fake_table(measure_fn=faster))
    assert any(n.startswith("re-planned: the measured latency reduction") for n in report.notes), report.notes
    assert abs(report.achieved - 0.3) <= 0.02, report.notes
    assert report.achieved == pytest.approx(1 - faster(model, X) / dense_ms)  # the model kept is the one measured
    assert model(X).shape == (1, 10)


def test_a_replan_no_closer_keeps_the_first_result(pm) -> None:
    """Every pruned model "measures" 35% faster whatever its widths: the re-planned one is no closer to
    0.2, so the first pruned model is put back, with the widths it was measured with."""
    dense_ms = predict_latency(net(), X, fake_table()).layers_ms
    measured_widths = []

    def always_35(model, x):
        widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        if predict_latency(model, x, fake_table()).layers_ms >= dense_ms:
            return dense_ms
        measured_widths.append(widths)
        return 0.65 * dense_ms

    model = net()
    report = modprune.prune(model, latency_config(0.2), X, pm=pm, latency_table=fake_table(measure_fn=always_35))
    assert any(n.startswith("re-planned: the measured latency reduction 0.3500") for n in report.notes)
    assert any(n.startswith("re-planned result (0.3500) is no closer") for n in report.notes), report.notes
    assert len(measured_widths) >= 2 and measured_widths[0] != measured_widths[-1]  # two different prunes
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == measured_widths[0]
    assert report.achieved == pytest.approx(0.35)
    assert model(X).shape == (1, 10)


def test_a_run_within_the_tolerance_is_not_replanned(pm) -> None:
    report = modprune.prune(net(), latency_config(0.4), X, pm=pm,
                            latency_table=fake_table(measure_fn=lambda m, x: predict_latency(m, x, fake_table()).layers_ms))
    assert abs(report.achieved - 0.4) <= 0.02
    assert not any(n.startswith("re-planned") for n in report.notes)
