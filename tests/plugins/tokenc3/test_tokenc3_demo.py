"""The plugin's demo (``modprune_register_demos``): the default of ``modprune demo`` when installed."""

from __future__ import annotations

import modprune
from modprune.workflows import DemoSpec
from modprune.workflows.demo import FULL, QUICK, available_demos, select_demo
from modprune_tokenc3_lsnet import plugin


def test_the_plugin_demo_is_the_default_with_todays_model_and_recipes() -> None:
    pm = modprune.get_plugin_manager(entry_points=False, plugins=[plugin])
    assert list(available_demos(pm)) == [plugin.DEMO_NAME, "yolov8n"]
    demo = select_demo(pm=pm)
    assert isinstance(demo, DemoSpec) and demo.name == plugin.DEMO_NAME
    assert demo.model == "yolov13n_lsnet_p2_simple.yaml"
    assert (demo.unstructured_recipe, demo.structured_recipe) == ("tokenc3-lsnet-seed", "tokenc3-lsnet-structured")
    assert {demo.unstructured_recipe, demo.structured_recipe} <= set(pm.strategies.recipes.list())
    assert demo.unstructured_label == "seed-unstructured"  # the row name docs/results.md is rendered from
    assert demo.title == "modprune demo: TokenC3-LSNet-n"
    assert (demo.full, demo.quick) == (FULL, QUICK)


def test_the_plugin_demo_model_builds(model_n) -> None:
    demo = select_demo(pm=modprune.get_plugin_manager(entry_points=False, plugins=[plugin]))
    model = modprune.load(demo.model)
    assert type(model) is type(model_n)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model_n.parameters())
