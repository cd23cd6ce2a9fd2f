"""The stock demo (no plugin offers one) builds its model offline and its recipes apply to it."""

from __future__ import annotations

from pathlib import Path

import torch

import modprune
from modprune.detectors import Categories
from modprune.workflows.demo import STOCK_DEMO


def test_the_stock_demo_model_builds_and_prunes(offline_ultralytics: Path) -> None:
    model = modprune.load(STOCK_DEMO.model)
    from ultralytics.nn.tasks import DetectionModel

    assert isinstance(model, DetectionModel)
    assert isinstance(modprune.categorize(model), Categories)
    report = modprune.prune(model, modprune.load_recipe(STOCK_DEMO.unstructured_recipe),
                            example_inputs=torch.zeros(1, 3, 64, 64))
    assert 0.05 < report.to_dict()["nonzero_reduction"] < 0.15
