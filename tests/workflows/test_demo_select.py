"""Which demo ``modprune demo`` runs (``modprune_register_demos``), checked without training anything."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path

import pytest
from torch import nn

import modprune
import modprune.plugins
from modprune.exceptions import ConfigError, ModpruneError, UnknownStrategyError
from modprune.workflows import DemoSettings, DemoSpec
from modprune.workflows.demo import FULL, QUICK, STOCK_DEMO, available_demos, run_demo, select_demo

cli_main = importlib.import_module("modprune.cli.main")


def demo_plugin(*specs: DemoSpec, name: str = "DemoPlugin") -> object:
    def modprune_register_demos(self: object) -> list[DemoSpec]:
        return list(specs)

    return type(name, (), {"modprune_register_demos": modprune.hookimpl(modprune_register_demos)})()


def spec(name: str, model: object = "model.yaml", **kwargs: object) -> DemoSpec:
    return DemoSpec(name=name, model=model, unstructured_recipe="unstructured-10", structured_recipe="structured-30",
                    **kwargs)


def manager(*plugins: object) -> modprune.ModpruneManager:
    return modprune.get_plugin_manager(entry_points=False, plugins=plugins)


def test_without_plugin_demos_the_stock_demo_runs_with_builtin_recipes() -> None:
    pm = manager()
    assert list(available_demos(pm)) == ["yolov8n"]
    chosen = select_demo(pm=pm)
    assert chosen is STOCK_DEMO and chosen.model_name == "yolov8n_one_class"
    assert {chosen.unstructured_recipe, chosen.structured_recipe} <= set(pm.strategies.recipes.list())
    assert (chosen.full, chosen.quick) == (FULL, QUICK)


def test_the_first_plugin_demo_is_the_default_and_others_are_selected_by_name(caplog: pytest.LogCaptureFixture) -> None:
    a, b, dup = spec("alpha"), spec("beta"), spec("alpha", model="other.yaml")
    pm = manager(demo_plugin(a, name="First"), demo_plugin(b, dup, name="Second"))
    with caplog.at_level(logging.WARNING, logger="modprune"):
        demos = available_demos(pm)
    assert list(demos) == ["alpha", "beta", "yolov8n"]
    assert demos["alpha"] is a  # the first of a name wins; the later one is skipped with a warning
    assert any("Second" in r.getMessage() and "'alpha'" in r.getMessage() for r in caplog.records)
    assert select_demo(pm=pm) is a
    assert select_demo("beta", pm=pm) is b and select_demo("yolov8n", pm=pm) is STOCK_DEMO
    with pytest.raises(UnknownStrategyError, match="unknown demo 'gamma'; valid demos: alpha, beta, yolov8n"):
        select_demo("gamma", pm=pm)


def test_a_broken_demo_hook_is_named_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        @modprune.hookimpl
        def modprune_register_demos(self) -> list[DemoSpec]:
            raise RuntimeError("no demo today")

    pm = manager(Broken(), demo_plugin("not a spec", name="Wrong"), demo_plugin(spec("ok")))
    with caplog.at_level(logging.WARNING, logger="modprune"):
        assert list(available_demos(pm)) == ["ok", "yolov8n"]
    assert {"Broken", "Wrong"} <= set(pm.failed_plugins)
    assert "no demo today" in pm.failed_plugins["Broken"] and "not a DemoSpec" in pm.failed_plugins["Wrong"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "has space"}, "demo name"),
        ({"name": "x", "model": 3}, "model"),
        ({"name": "x", "model": ""}, "model"),
        ({"name": "x", "unstructured_label": "base"}, "fixed row"),
        ({"name": "x", "unstructured_label": ""}, "non-empty"),
        ({"name": "x", "quick": {"imgsz": 64}}, "DemoSettings"),
    ],
)
def test_demo_spec_is_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        spec(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"imgsz": 0}, "imgsz=0 must be an integer >= 1"),
        ({"batch": 2.0}, "batch=2.0"),
        ({"train_epochs": True}, "train_epochs=True"),
        ({"seed": -1}, "seed=-1 must be an integer >= 0"),
        ({"nominal_batch": 0}, r"nominal_batch=0 must be an integer >= 1 \(or None"),
        ({"thin_baseline": "yes"}, "thin_baseline='yes'"),
    ],
)
def test_demo_settings_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DemoSettings(**kwargs)


def test_demo_settings_step_every_batch_by_default() -> None:
    assert FULL.nominal_batch == FULL.batch and QUICK.nominal_batch == QUICK.batch
    assert DemoSettings(nominal_batch=None, seed=0).nominal_batch is None  # ultralytics' own 64


def test_cli_demo_passes_the_nominal_batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import modprune.workflows.demo as demo_module

    seen: list[DemoSettings] = []
    monkeypatch.setattr(modprune.plugins, "_default", [manager(demo_plugin(spec("alpha")))])
    monkeypatch.setattr(demo_module, "run_demo", lambda out, settings, **kw: seen.append(settings))
    assert cli_main.main(["demo", "--out", str(tmp_path / "o"), "--nominal-batch", "64"]) == 0
    assert cli_main.main(["demo", "--out", str(tmp_path / "o"), "--quick"]) == 0
    assert [s.nominal_batch for s in seen] == [64, QUICK.nominal_batch]
    assert cli_main.main(["demo", "--out", str(tmp_path / "o"), "--nominal-batch", "0"]) == 2


def test_a_factory_model_is_named_and_its_failure_names_the_demo(tmp_path: Path) -> None:
    def broken_factory() -> nn.Module:
        raise ModpruneError("missing weights")

    tiny = DemoSettings(n_train=1, n_val=1, imgsz=64)
    demo = spec("factory-demo", model=broken_factory, full=tiny)
    assert demo.model_name == "broken_factory"
    with pytest.raises(ModpruneError, match="demo 'factory-demo' cannot build its model 'broken_factory'"):
        run_demo(tmp_path / "out", demo=demo, pm=manager())
    assert (tmp_path / "out" / "data" / "data.yaml").is_file()  # it got as far as the data, with the spec's sizes
    not_a_model = spec("not-a-model", model=lambda: "a string", full=tiny)
    with pytest.raises(ModpruneError, match="not an nn.Module"):
        run_demo(tmp_path / "out2", demo=not_a_model, pm=manager())


def test_an_unknown_demo_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UnknownStrategyError, match="unknown demo 'nope'"):
        run_demo(tmp_path / "out", demo="nope", pm=manager())
    assert not (tmp_path / "out").exists()


def test_cli_lists_and_selects_demos(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(modprune.plugins, "_default", [manager(demo_plugin(spec("alpha", description="first one")))])
    assert cli_main.main(["demo", "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "alpha (default): model.yaml, recipes unstructured-10 and structured-30; first one",
        f"yolov8n: yolov8n_one_class, recipes unstructured-10 and structured-30; {STOCK_DEMO.description}",
    ]
    assert cli_main.main(["demo", "--demo", "gamma"]) == 2
    assert capsys.readouterr().err == "modprune: error: unknown demo 'gamma'; valid demos: alpha, yolov8n\n"


def test_every_demo_training_gets_the_nominal_batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Base, structured fine-tuning and thin model step alike; a recipe's own ``finetune`` setting wins."""
    import modprune.integrations.ultralytics.trainer as trainer
    import modprune.workflows.demo as demo_module
    import modprune.workflows.thin_baseline as thin_module

    seen: dict[str, object] = {}

    def fake_finetune(model: nn.Module, data: object, options: trainer.FinetuneOptions, teacher: object = None):
        seen[options.name] = options.nominal_batch
        return model

    def fake_thin(*args: object, finetune_overrides: dict, **kwargs: object):
        seen["thin"] = finetune_overrides["nominal_batch"]
        return nn.Identity(), type("Match", (), {"to_dict": dict})()

    monkeypatch.setattr(trainer, "finetune", fake_finetune)
    monkeypatch.setattr(thin_module, "thin_baseline", fake_thin)
    monkeypatch.setattr(demo_module, "save", lambda *a, **kw: None)
    monkeypatch.setattr(demo_module._Run, "validate", lambda self, label, model: None)
    plain = modprune.api.find_recipe("structured-30")
    assert not plain.finetune
    recipes = {"plain": plain, "own": dataclasses.replace(plain, finetune={"nominal_batch": 32})}
    monkeypatch.setattr(demo_module.api, "find_recipe", recipes.__getitem__)
    monkeypatch.setattr(demo_module.api, "prune", lambda model, config, **kw: type("R", (), {"digest": str})())
    for recipe, expected in (("plain", 8), ("own", 32)):
        demo = DemoSpec(name="x", model=lambda: nn.Linear(1, 1), unstructured_recipe="u", structured_recipe=recipe)
        run = demo_module._Run(spec=demo, s=DemoSettings(nominal_batch=8), out=tmp_path, say=lambda m: None)
        demo_module._train_base(run)
        demo_module._prune_structured(run)
        demo_module._train_thin(run)
        assert seen == {"base": 8, "structured-ft": expected, "thin": 8}, recipe
