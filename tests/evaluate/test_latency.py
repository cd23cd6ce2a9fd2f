"""Interleaved latency measurement: structure and behaviour only (no timed assertions)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.measure.latency import MIN_ROUNDS, bootstrap_ci, measure_latency, spread_stats, verdict


class FakeClock:
    """A clock that only moves when a fake model 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_model(clock: FakeClock, cost: float, log: list[str], name: str):
    def run(_x: object) -> None:
        clock.now += cost
        log.append(name)
    return run


def test_structure_ratios_and_rotation() -> None:
    clock, log = FakeClock(), []
    models = {"base": make_model(clock, 0.010, log, "base"), "half": make_model(clock, 0.005, log, "half"),
              "slow": make_model(clock, 0.020, log, "slow")}
    res = measure_latency(models, torch.zeros(1), warmup=2, rounds=6, min_rounds=3, timer=clock, check_machine=False)
    assert res["baseline"] == "base" and res["rounds"] == 6 and res["warmup"] == 2 and res["order"] == "rotating"
    assert set(res["models"]) == {"base", "half", "slow"}
    assert set(res["ratios"]) == {"half", "slow"}
    m = res["models"]["half"]
    for key in ("median_ms", "mean_ms", "min_ms", "max_ms", "p10_ms", "p90_ms", "q25_ms", "q75_ms", "fps",
                "samples_ms"):
        assert key in m
    assert len(m["samples_ms"]) == 6
    assert m["median_ms"] == pytest.approx(5.0) and m["fps"] == pytest.approx(200.0)
    assert res["ratios"]["half"]["median"] == pytest.approx(0.5)
    assert res["ratios"]["slow"]["median"] == pytest.approx(2.0)
    assert len(res["ratios"]["slow"]["samples"]) == 6
    # warm-up: every model twice, then 6 rounds whose order rotates
    timed = log[6:]
    rounds = [timed[i:i + 3] for i in range(0, 18, 3)]
    assert rounds[0] == ["base", "half", "slow"]
    assert rounds[1] == ["half", "slow", "base"]
    assert rounds[2] == ["slow", "base", "half"]
    assert rounds[3] == rounds[0]
    assert verdict(res["ratios"]["half"]) == "faster by 50.0%"
    assert verdict(res["ratios"]["slow"]) == "slower by 100.0%"


def test_explicit_baseline_and_per_model_inputs() -> None:
    seen = {}
    res = measure_latency({"a": lambda x: seen.setdefault("a", x), "b": lambda x: seen.setdefault("b", x)},
                          "shared", rounds=3, warmup=0, baseline="b", inputs={"a": "own"})
    assert res["baseline"] == "b" and set(res["ratios"]) == {"a"}
    assert seen == {"a": "own", "b": "shared"}


def test_threads_fixed_and_restored_and_module_mode_restored() -> None:
    before = torch.get_num_threads()
    observed = []
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()

    def probe(_x: object) -> None:
        observed.append(torch.get_num_threads())

    res = measure_latency({"net": net, "probe": probe}, torch.randn(1, 3, 16, 16), threads=1, rounds=3, warmup=1)
    assert res["threads"] == 1 and set(observed) == {1}
    assert torch.get_num_threads() == before
    assert net.training  # eval during timing, restored afterwards


def test_restores_threads_on_error() -> None:
    before = torch.get_num_threads()

    def boom(_x: object) -> None:
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        measure_latency({"boom": boom}, None, threads=1, rounds=3)
    assert torch.get_num_threads() == before


def test_onnx_like_session_gets_numpy_feed() -> None:
    class FakeSession:
        def __init__(self) -> None:
            self.feeds = []

        def get_inputs(self):
            return [type("I", (), {"name": "images"})()]

        def run(self, outputs, feed):
            self.feeds.append(feed)
            return [feed["images"]]

    sess = FakeSession()
    measure_latency({"torch": lambda x: x, "ort": sess}, torch.ones(1, 3, 4, 4), rounds=3, min_rounds=3, warmup=1)
    assert len(sess.feeds) == 4
    assert type(sess.feeds[0]["images"]).__module__ == "numpy"


@pytest.mark.parametrize("ratio, expected", [
    ({"median": 0.8, "p10": 0.7, "p90": 0.9}, "faster by 20.0%"),
    ({"median": 1.25, "p10": 1.1, "p90": 1.4}, "slower by 25.0%"),
    ({"median": 0.95, "p10": 0.8, "p90": 1.05}, "no measurable change"),
    ({"median": 1.0, "p10": 1.0, "p90": 1.0}, "no measurable change"),
])
def test_verdict(ratio: dict, expected: str) -> None:
    assert verdict(ratio) == expected


def test_verdict_custom_spread_keys() -> None:
    r = {"median": 0.9, "p10": 0.7, "p90": 1.1, "q25": 0.85, "q75": 0.95}
    assert verdict(r) == "no measurable change"
    assert verdict(r, low="q25", high="q75") == "faster by 10.0%"


@pytest.mark.parametrize("bad", [{}, {"median": 1.0}, {"median": "x", "p10": 1, "p90": 2},
                                 {"median": 1.0, "p10": 1.2, "p90": 0.9}])
def test_verdict_bad_input(bad: dict) -> None:
    with pytest.raises(ConfigError):
        verdict(bad)


@pytest.mark.parametrize("kwargs", [
    {"models": {}}, {"models": [lambda x: x]}, {"models": {"": lambda x: x}}, {"models": {"a": 3}},
    {"rounds": 2}, {"warmup": -1}, {"threads": 0}, {"baseline": "zzz"}, {"rounds": 3.0},
    {"min_rounds": 2}, {"resamples": 10}, {"min_rounds": True},
])
def test_bad_arguments(kwargs: dict) -> None:
    args = {"models": {"a": lambda x: x}, **kwargs}
    models = args.pop("models")
    with pytest.raises(ConfigError):
        measure_latency(models, None, **args)


def test_spread_stats() -> None:
    s = spread_stats([1, 2, 3, 4, 5])
    assert s["median"] == 3 and s["min"] == 1 and s["max"] == 5 and s["q25"] == 2 and s["q75"] == 4
    with pytest.raises(ConfigError):
        spread_stats([])


def test_real_models_run() -> None:
    small = nn.Conv2d(3, 8, 3)
    big = nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3))
    res = measure_latency({"small": small, "big": big}, torch.randn(1, 3, 32, 32), rounds=5, warmup=1, threads=1)
    assert all(v["median_ms"] > 0 for v in res["models"].values())
    words = verdict(res["ratios"]["big"])
    if not res["reliable"]:  # this machine may be busy: then the words say so
        assert words.startswith("unreliable: machine busy (measured: ") and res["machine"]["reasons"]
        words = words[len("unreliable: machine busy (measured: "):-1]
    assert words == "no measurable change" or words.split()[0] in {"faster", "slower"}
    assert res["ratios"]["big"]["ci_low"] <= res["ratios"]["big"]["median"] <= res["ratios"]["big"]["ci_high"]


def test_min_rounds_raise_the_round_count() -> None:
    clock, log = FakeClock(), []
    res = measure_latency({"a": make_model(clock, 0.01, log, "a")}, None, rounds=3, warmup=0, timer=clock,
                          check_machine=False)
    assert res["rounds"] == MIN_ROUNDS and res["rounds_requested"] == 3 and len(log) == MIN_ROUNDS


def test_ratio_has_a_seeded_bootstrap_interval_and_verdict_uses_it() -> None:
    clock = FakeClock()
    costs = iter([0.010, 0.009, 0.011, 0.010, 0.012, 0.008] * 20)

    def noisy(_x: object) -> None:
        clock.now += next(costs)

    def steady(_x: object) -> None:
        clock.now += 0.010

    runs = [measure_latency({"base": steady, "noisy": noisy}, None, rounds=12, warmup=0, timer=clock,
                            check_machine=False) for _ in range(2)]
    r = runs[0]["ratios"]["noisy"]
    assert r["ci_low"] <= r["median"] <= r["ci_high"] and r["ci_low"] < r["ci_high"]
    assert r["ci_low"] == pytest.approx(runs[1]["ratios"]["noisy"]["ci_low"])  # seeded: same samples, same interval
    assert r["reliable"] is True and runs[0]["machine"] is None
    assert verdict(r) == "no measurable change"  # the interval includes 1.0


def test_bootstrap_ci() -> None:
    lo, hi = bootstrap_ci([1.0] * 20)
    assert lo == hi == 1.0
    lo, hi = bootstrap_ci(list(range(1, 101)), resamples=500, seed=3)
    assert 35 < lo < 50.5 < hi < 66
    assert bootstrap_ci(list(range(100)), seed=1) == bootstrap_ci(list(range(100)), seed=1)
    with pytest.raises(ConfigError):
        bootstrap_ci([])


def test_verdict_prefers_the_interval_and_marks_unreliable_figures() -> None:
    r = {"median": 0.9, "p10": 0.7, "p90": 1.1, "ci_low": 0.85, "ci_high": 0.95}
    assert verdict(r) == "faster by 10.0%"  # the CI excludes 1 although the p10..p90 spread does not
    assert verdict(r, low="p10", high="p90") == "no measurable change"
    assert verdict({**r, "reliable": False}) == "unreliable: machine busy (measured: faster by 10.0%)"
