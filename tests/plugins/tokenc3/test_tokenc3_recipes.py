"""The plugin's detectors (by type) and the seed recipe, through modprune's public API only."""

from __future__ import annotations

import copy

import pytest
import torch

import modprune
from modprune.report import category_table

SEED_RATIOS = {
    "tokenc3": 0.06, "lsconv": 0.06, "lsghost": 0.06, "hyperace": 0.04, "fullpad": 0.10,
    "attention": 0.12, "dllm": 0.12, "dsc": 0.15, "early_backbone": 0.06, "conv": 0.22,
}


@pytest.fixture(scope="module")
def pm():
    return modprune.get_plugin_manager()


def test_plugin_is_found_through_its_entry_point(pm):
    info = pm.plugin_info["tokenc3_lsnet"]
    assert not info.builtin
    assert "tokenc3-lsnet-seed" in info.registered["recipe"]
    assert {"tokenc3_lsnet.tokenc3", "tokenc3_lsnet.dllm"} <= set(info.registered["detector"])


def test_load_accepts_the_users_yaml_name_without_extra_import(pm):
    model = modprune.load("yolov13n_lsnet_p2_simple.yaml", pm=pm)
    assert modprune.measure.count_params(model) == 4_719_701


def _module_category(cats, name):
    return cats.modules[name]


def test_categories_come_from_types(model_n, pm):
    cats = modprune.categorize(model_n, pm=pm)
    byname = dict(model_n.named_modules())
    expect = {
        "model.2.cv1": "early_backbone",  # layers 0-2 outrank the blocks inside them
        "model.4": "tokenc3",
        "model.4.cv2.conv": "tokenc3",  # plain convs inside a block belong to the block
        "model.4.cv1": "lsconv",
        "model.5": "dsc",
        "model.9": "hyperace",
        "model.12": "fullpad",
        "model.3.conv": "conv",
        "model.31.cv2.0.0.conv": "detect_head",
    }
    for name, category in expect.items():
        assert _module_category(cats, name) == category, name
    for name, module in byname.items():
        kind = type(module).__name__
        if kind == "LSGhostBottleneck" and not name.startswith("model.2."):
            assert cats.modules[name] == "lsghost", name
        if kind == "DynamicLocalMixer" and not name.startswith("model.2."):
            assert cats.modules[name] == "dllm", name
        if kind == "AdaHyperedgeGen":
            assert cats.modules[name] == "attention", name
        if kind == "DSC3k":
            assert cats.modules[name] == "dsc", name
    assert {"tokenc3", "lsconv", "lsghost", "dllm", "hyperace", "attention", "fullpad", "dsc",
            "early_backbone", "detect_head"} <= set(cats.params.values())


def test_seed_recipe_is_exact_and_keeps_proportions(model_n, pm):
    model = copy.deepcopy(model_n)
    cfg = modprune.load_recipe("tokenc3-lsnet-seed", pm=pm)
    head_before = {k: v.clone() for k, v in model.model[-1].state_dict().items()}
    report = modprune.prune(model, cfg, pm=pm)
    assert abs(report.achieved - 0.10) <= 0.001
    assert report.params_after == report.params_before  # masks only: nothing is removed
    for k, v in model.model[-1].state_dict().items():
        assert torch.equal(v, head_before[k]), k
    rows = {r.category: r for r in report.categories}
    # every prunable category is scaled by the same factor: removed / requested is constant
    scale = {c: rows[c].removed_fraction / r for c, r in SEED_RATIOS.items() if c != "fullpad"}
    values = list(scale.values())
    assert max(values) / min(values) < 1.03, scale
    assert rows["fullpad"].removed_fraction == 0  # only scalar gates: nothing to zero there


def test_seed_recipe_targets_only_module_types_not_paths(model_n, pm):
    """The user's original bug: ratios keyed by class name never matched module paths."""
    model = copy.deepcopy(model_n)
    before = category_table(model, modprune.categorize(model, pm=pm))
    modprune.prune(model, modprune.load_recipe("tokenc3-lsnet-seed", pm=pm), pm=pm)
    after = category_table(model, modprune.categorize(model, pm=pm))
    for category in ("tokenc3", "lsconv", "lsghost", "dllm", "attention", "dsc", "hyperace"):
        assert after[category][1] < before[category][1], category


def test_stock_models_get_no_plugin_categories(model_n, pm):
    """With the plugin's blocks imported (model_n exists), a stock yolov8n stays stock."""
    stock = modprune.load("yolov8n.yaml", pm=pm)
    plugin_categories = {"tokenc3", "lsconv", "lsghost", "dllm", "hyperace", "attention", "fullpad", "dsc",
                         "early_backbone"}
    assert not plugin_categories & set(modprune.categorize(stock, pm=pm).params.values())
