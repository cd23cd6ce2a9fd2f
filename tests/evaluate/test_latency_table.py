"""Per-layer latency tables: keys, the formula table, lazy measurement, the disk cache and its fingerprint,
whole-model prediction and the residual. Behaviour only: no timed assertions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure import (
    FormulaLatencyTable,
    LayerKey,
    MeasuredLatencyTable,
    Residual,
    calibrate_residual,
    default_cache_dir,
    predict_latency,
    vector_multiple,
)
from modprune.measure import latency_model
from modprune.measure.latency_model import layer_calls
from modprune.measure.latency_table import fingerprint


def tiny_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16),
                         nn.Conv2d(16, 24, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))


def conv_key(cin: int = 16, cout: int = 32, groups: int = 1, size: int = 8) -> LayerKey:
    return LayerKey.of(nn.Conv2d(cin, cout, 3, padding=1, groups=groups), torch.zeros(1, cin, size, size))


class CountingTimer:
    """Plays a layer timing: counts the keys it is asked for, returns their MACs / 1e6."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, key: LayerKey) -> float:
        self.asked.append(key.text())
        return key.macs() / 1e6


def test_layer_key_of_conv_and_linear() -> None:
    key = LayerKey.of(nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.zeros(2, 4, 16, 16), threads=3)
    assert (key.kind, key.in_channels, key.out_channels, key.kernel, key.stride) == ("conv2d", 4, 8, (3, 3), (2, 2))
    assert (key.size, key.batch, key.threads, key.dtype) == ((16, 16), 2, 3, "float32")
    assert key.output_size() == (8, 8)
    assert key.macs() == 2 * 8 * 8 * 8 * 4 * 9
    lin = LayerKey.of(nn.Linear(6, 3), torch.zeros(2, 7, 6))
    assert (lin.kind, lin.size, lin.macs()) == ("linear", (7,), 2 * 7 * 3 * 6)
    assert LayerKey.of(nn.ReLU(), torch.zeros(1, 2)) is None


def test_depthwise_key_keeps_groups_with_widths() -> None:
    key = conv_key(16, 16, groups=16)
    assert key.depthwise
    narrow = key.with_widths(8, 8)
    assert (narrow.in_channels, narrow.out_channels, narrow.groups) == (8, 8, 8)
    assert conv_key().with_widths(8, 24).groups == 1


def test_layer_key_rejects_inconsistent_groups() -> None:
    with pytest.raises(ConfigError, match="divisible by groups"):
        LayerKey("conv2d", 6, 8, (3, 3), (1, 1), (1, 1), (1, 1), 4, (8, 8), 1)


def test_formula_table_rounds_widths_up_to_its_multiple() -> None:
    table = FormulaLatencyTable(align=8)
    assert table.cost_ms(conv_key(16, 5)) == table.cost_ms(conv_key(16, 8))
    assert table.cost_ms(conv_key(16, 9)) > table.cost_ms(conv_key(16, 8))
    assert table.cost_ms(conv_key(16, 8)) == table.cost_ms(conv_key(16, 8))
    assert table.deterministic and not table.times_models


def test_measured_table_is_lazy_and_cached_on_disk(tmp_path) -> None:
    timer = CountingTimer()
    table = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=timer)
    assert timer.asked == []  # nothing measured before it is asked for
    first = table.cost_ms(conv_key())
    assert table.cost_ms(conv_key()) == first and len(timer.asked) == 1
    assert table.path.is_file() and table.path.is_relative_to(tmp_path)
    saved = json.loads(table.path.read_text())
    assert saved["fingerprint"] == table.fingerprint() and len(saved["entries"]) == 1
    again_timer = CountingTimer()
    again = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=again_timer)
    assert again.cost_ms(conv_key()) == first and again_timer.asked == []  # read from the cache
    again.cost_ms(conv_key(cout=24))
    assert len(again_timer.asked) == 1


@pytest.mark.parametrize("change", [{"threads": 2}, {"fingerprint_override": {"torch": "0.0.0"}},
                                    {"fingerprint_override": {"cpu": "another CPU"}}])
def test_another_fingerprint_measures_again(tmp_path, change) -> None:
    MeasuredLatencyTable(cache_dir=tmp_path, time_layer=CountingTimer()).cost_ms(conv_key())
    timer = CountingTimer()
    other = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=timer, **change)
    other.cost_ms(conv_key())
    assert len(timer.asked) == 1
    assert len(list((tmp_path / "latency").glob("*.json"))) == 2


def test_cache_with_a_foreign_fingerprint_inside_is_ignored(tmp_path) -> None:
    table = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=CountingTimer())
    table.cost_ms(conv_key())
    data = json.loads(table.path.read_text())
    data["fingerprint"]["torch"] = "edited"
    table.path.write_text(json.dumps(data))
    timer = CountingTimer()
    MeasuredLatencyTable(cache_dir=tmp_path, time_layer=timer).cost_ms(conv_key())
    assert len(timer.asked) == 1
    table.path.write_text("{not json")
    timer = CountingTimer()
    MeasuredLatencyTable(cache_dir=tmp_path, time_layer=timer).cost_ms(conv_key())
    assert len(timer.asked) == 1


class BusyThenQuietTimer:
    """Plays a machine that is busy for the first ``busy`` timings (slow, flagged), then quiet."""

    def __init__(self, busy: int) -> None:
        self.busy, self.calls = busy, 0

    def __call__(self, key: LayerKey) -> tuple[float, bool]:
        self.calls += 1
        quiet = self.calls > self.busy
        return (1.0 if quiet else 5.0 + self.calls), quiet


def test_a_busy_timing_is_retried_and_the_quiet_one_kept(tmp_path) -> None:
    timer = BusyThenQuietTimer(busy=2)
    table = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=timer, retries=2)
    assert table.cost_ms(conv_key()) == 1.0 and timer.calls == 3
    assert not table.is_noisy(conv_key()) and table.describe()["noisy"] == 0


def test_an_entry_never_timed_quietly_is_noisy_and_timed_again_next_time(tmp_path) -> None:
    busy = BusyThenQuietTimer(busy=100)
    table = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=busy, retries=1)
    assert table.cost_ms(conv_key()) == 6.0 and busy.calls == 2  # the fastest of two busy attempts
    assert table.is_noisy(conv_key()) and table.cost_ms(conv_key()) == 6.0 and busy.calls == 2  # once per table
    assert json.loads(table.path.read_text())["noisy"] == [conv_key().text()]
    prediction = predict_latency(nn.Sequential(nn.Conv2d(16, 32, 3, padding=1)), torch.zeros(1, 16, 8, 8), table)
    assert (prediction.calls, prediction.noisy_calls) == (1, 1)

    still_busy = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=BusyThenQuietTimer(busy=100), retries=0)
    assert still_busy.cost_ms(conv_key()) == 6.0 and still_busy.is_noisy(conv_key())  # the faster figure stays
    quiet = BusyThenQuietTimer(busy=0)
    later = MeasuredLatencyTable(cache_dir=tmp_path, time_layer=quiet)
    assert later.cost_ms(conv_key()) == 1.0 and quiet.calls == 1 and not later.is_noisy(conv_key())
    assert later.describe()["retimed"] == 1 and json.loads(later.path.read_text())["noisy"] == []
    assert MeasuredLatencyTable(cache_dir=tmp_path, time_layer=quiet).cost_ms(conv_key()) == 1.0 and quiet.calls == 1
    with pytest.raises(ConfigError, match="retries"):
        MeasuredLatencyTable(cache_dir=False, retries=-1)


def _spin(stop_at: float) -> None:
    import time

    while time.monotonic() < stop_at:
        pass


def test_a_layer_timed_beside_a_cpu_hog_is_marked_noisy() -> None:
    """cores + 1 busy-loop processes: every attempt waits for a core, so the entry must end up noisy."""
    import multiprocessing
    import os
    import time

    ctx = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
    stop_at = time.monotonic() + 30.0
    hogs = [ctx.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range((os.cpu_count() or 1) + 1)]
    for p in hogs:
        p.start()
    try:
        time.sleep(0.5)
        table = MeasuredLatencyTable(cache_dir=False, rounds=20, warmup=2, retries=1)
        table.cost_ms(conv_key(16, 16, size=32))
    finally:
        for p in hogs:
            p.terminate()
        for p in hogs:
            p.join(5)
    assert table.is_noisy(conv_key(16, 16, size=32)) and table.describe()["noisy"] == 1


def test_real_timing_of_one_small_layer() -> None:
    table = MeasuredLatencyTable(cache_dir=False, rounds=3, warmup=1)
    ms = table.cost_ms(conv_key(8, 8, size=8))
    assert math.isfinite(ms) and ms > 0 and table.path is None


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("MODPRUNE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "modprune"
    monkeypatch.setenv("MODPRUNE_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_fingerprint_names_machine_versions_backend_threads() -> None:
    found = fingerprint("torch-cpu", 2)
    assert found["torch"] == torch.__version__ and found["threads"] == 2 and found["backend"] == "torch-cpu"
    assert found["cpu"] and found["capability"]
    with pytest.raises(ConfigError, match="torch-cpu"):
        fingerprint("tpu", 1)
    with pytest.raises(ConfigError, match="threads"):
        MeasuredLatencyTable(threads=0, cache_dir=False)


def test_prediction_sums_the_table_over_every_layer_call() -> None:
    model, x = tiny_net(), torch.randn(2, 3, 16, 16)
    table = FormulaLatencyTable(per_mac=1e-6, per_layer=0.02, align=1)
    calls = layer_calls(model, x)
    assert [c.name for c in calls] == ["0", "2", "3", "6"]
    prediction = predict_latency(model, x, table)
    expected = sum(0.02 + 1e-6 * c.key.macs() for c in calls)  # align 1: MACs as they are
    assert prediction.layers_ms == pytest.approx(expected) and prediction.residual_ms == 0
    assert set(prediction.per_layer) == {"0", "2", "3", "6"}
    with_rest = predict_latency(model, x, table, Residual(1.0, prediction.activations))
    assert with_rest.total_ms == pytest.approx(expected + 1.0)


def test_residual_keeps_dispatch_fixed_and_scales_the_rest() -> None:
    residual = Residual(ms=2.0, activations=100, fixed_ms=1.0)
    assert residual.scaled(100) == pytest.approx(2.0)
    assert residual.scaled(50) == pytest.approx(1.5)
    assert Residual(ms=2.0, activations=100, fixed_ms=5.0).scaled(50) == pytest.approx(2.0)  # fixed capped


def test_calibrated_residual_is_what_the_layers_leave_unexplained() -> None:
    model, x = tiny_net(), torch.randn(1, 3, 16, 16)
    table = FormulaLatencyTable(measure_fn=lambda m, _x: 10.0)
    layers = predict_latency(model, x, table).layers_ms
    residual = calibrate_residual(model, x, table)
    assert residual.ms == pytest.approx(10.0 - layers) and residual.fixed_ms == 0.0
    assert predict_latency(model, x, table, residual).total_ms == pytest.approx(10.0)
    assert calibrate_residual(model, x, FormulaLatencyTable()).ms == 0.0  # a table that times no models


def test_other_ops_counts_the_forward_outside_layers() -> None:
    assert latency_model.other_ops(tiny_net(), torch.randn(1, 3, 8, 8)) == 2  # relu and the pooling mean


@pytest.mark.parametrize(("capability", "flags", "expected"), [
    ("AVX512", set(), 16), ("AVX2", set(), 8), ("DEFAULT", {"avx2"}, 8), ("DEFAULT", set(), 4)])
def test_vector_multiple_from_cpu_capability(monkeypatch, capability, flags, expected) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(latency_model, "_cpu_flags", lambda: flags)
    assert vector_multiple() == expected
    assert vector_multiple(torch.float16) == expected * 2


def test_onnxruntime_backend_times_layers_and_models() -> None:
    pytest.importorskip("onnxruntime")
    table = MeasuredLatencyTable("onnxruntime-cpu", cache_dir=False, rounds=3, warmup=1, model_rounds=3)
    assert table.fingerprint()["onnxruntime"] and table.cost_ms(conv_key(8, 8, size=8)) > 0
    timed = table.measure_models({"a": tiny_net().eval(), "b": tiny_net().eval()}, torch.randn(1, 3, 16, 16))
    assert set(timed["ms"]) == {"a", "b"} and all(ms > 0 for ms in timed["ms"].values())
    assert set(timed["ratios"]) == {"b"} and isinstance(timed["reliable"], bool)
