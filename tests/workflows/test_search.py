"""The budgeted search: the best recipe round-trips and meets its budget; studies resume and are shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import modprune
from modprune.recipes import recipe_from_file
from modprune.workflows.search import Budget, search

from _toy_proxy import X, Fidelity, toy_cnn

optuna = pytest.importorskip("optuna")
HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_best_recipe_round_trips_and_meets_its_budget(tmp_path: Path) -> None:
    model = toy_cnn(width=16)
    result = search(model, Fidelity(model), X, budget="macs=0.4", objective="fidelity", trials=4, seed=0)
    assert result.complete + result.infeasible == 4 and result.complete >= 1
    assert set(result.config.category_ratios) == {"conv", "depthwise_conv", "linear"}
    path = tmp_path / "best.yaml"
    path.write_text(result.recipe("best").to_yaml())
    config = modprune.load_recipe(str(path))
    assert config == result.config and recipe_from_file(path).name == "best"
    fresh = toy_cnn(width=16)
    report = modprune.prune(fresh, config, example_inputs=X)
    assert abs(report.achieved - 0.4) <= 0.01
    assert Fidelity(model)(fresh)["fidelity"] == pytest.approx(result.value, rel=1e-4, abs=1e-7)
    values = [h["value"] for h in result.history if h["state"] == "complete"]
    assert result.value == max(values)


def test_a_study_resumes_and_refuses_another_search(tmp_path: Path) -> None:
    model = toy_cnn(width=16)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    kwargs = dict(objective="fidelity", storage=storage, study_name="s")
    search(model, Fidelity(model), X, budget="macs=0.3", trials=2, seed=0, **kwargs)
    again = search(model, Fidelity(model), X, budget="macs=0.3", trials=1, seed=1, **kwargs)
    assert len(again.history) == 3
    with pytest.raises(modprune.ConfigError, match="another search"):
        search(model, Fidelity(model), X, budget="macs=0.5", trials=1, **kwargs)


def test_a_study_keeps_how_its_trials_were_scored(tmp_path: Path) -> None:
    model = toy_cnn(width=16)
    kwargs = dict(objective="fidelity", storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", budget="macs=0.3")
    search(model, Fidelity(model), X, trials=2, seed=0, **kwargs)  # made before the proxy was recorded
    search(model, Fidelity(model), X, trials=1, seed=1, proxy="as pruned", **kwargs)
    again = search(model, Fidelity(model), X, trials=1, seed=2, proxy="as pruned", **kwargs)
    assert len(again.history) == 4
    with pytest.raises(modprune.ConfigError, match="another search.*proxy"):
        search(model, Fidelity(model), X, trials=1, proxy="after 1 fine-tuning epoch", **kwargs)
    recipe = again.recipe("r", finetune={"nominal_batch": 16}, proxy="after 1 fine-tuning epoch")
    assert "after 1 fine-tuning epoch" in recipe.description and recipe.finetune == {"nominal_batch": 16}


def test_two_workers_share_one_sqlite_study_without_losing_a_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    workers = [subprocess.Popen([sys.executable, str(HERE / "_search_worker.py"), storage, str(n), str(seed)],
                                env=env, stderr=subprocess.PIPE, text=True) for n, seed in ((3, 1), (2, 2))]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)


def test_a_latency_budget_is_met_by_the_best_recipe() -> None:
    from modprune.measure import FormulaLatencyTable

    table = FormulaLatencyTable(per_mac=1e-5, per_layer=0.001, per_output=1e-6)  # deterministic: no timing
    model = toy_cnn(width=32)
    base = modprune.PruneConfig(method="structured", importance="l1", pruner_options={"align": 4})
    result = search(model, Fidelity(model), X, budget="latency=0.3", objective="fidelity", trials=3, seed=0,
                    config=base, latency_table=table)
    assert result.config.target_kind == "latency" and abs(result.achieved - 0.3) <= 0.02
    assert all(abs(h["achieved"] - 0.3) <= 0.02 for h in result.history if h["state"] == "complete")
    report = modprune.prune(toy_cnn(width=32), result.config, X, latency_table=table)
    assert abs(report.achieved - 0.3) <= 0.02 and report.achieved == pytest.approx(result.achieved, abs=1e-6)


def test_infeasible_trials_never_win() -> None:
    model = toy_cnn(width=8)  # the linear layer feeds the output: its ratio alone cannot remove any MACs
    with pytest.raises(modprune.UnreachableTargetError, match="no trial"):
        search(model, Fidelity(model), X, budget="macs=0.3", objective="fidelity", trials=2, categories=["linear"])


def test_budgets() -> None:
    pm = modprune.get_plugin_manager(entry_points=False)
    assert Budget.parse("macs=0.4") == Budget("macs", 0.4, 0.01)
    assert Budget.parse("latency=0.5").tolerance == 0.02 and Budget.parse("macs=0.4", tolerance=0.03).tolerance == 0.03
    macs, latency = Budget.parse("macs=0.4"), Budget.parse("latency=0.5")
    assert macs.met(0.395) and macs.met(0.41) and not macs.met(0.42) and not macs.met(0.38)
    assert latency.met(0.485) and latency.met(0.56) and not latency.met(0.47)  # latency: a ceiling on what is left
    Budget.parse("params=0.5").check(pm)
    Budget.parse("latency=0.5").check(pm)  # the structured pruner has a latency target kind
    for bad in ("macs", "macs=x", "macs=1.5", "macs=0", "channels=0.3", "flops=0.3"):
        with pytest.raises(modprune.ConfigError):
            Budget.parse(bad).check(pm)


def test_without_optuna_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    model = toy_cnn(width=8)
    with pytest.raises(modprune.ModpruneError, match=r"modprune\[search\]"):
        search(model, Fidelity(model), X, budget="macs=0.3", trials=1)
