"""``tokenc3-lsnet-fast``: the DynamicLocalMixers go, then channels, to half the latency (deterministic fake
latency table: no timing; the measured figure at 640 px is in docs/results.md)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import modprune
from modprune.measure import FormulaLatencyTable, predict_latency

pytest.importorskip("ultralytics")
tc = pytest.importorskip("modprune_tokenc3_lsnet")


@pytest.mark.slow  # TokenC3-LSNet-n planned on a 128 px input: ~20-40 s
def test_fast_recipe_halves_the_latency_of_a_fake_table() -> None:
    torch.manual_seed(0)
    model = tc.build_model("yolov13n_lsnet_p2_simple.yaml", nc=1).eval()
    x = torch.zeros(1, 3, 128, 128)
    with torch.no_grad():
        predictions = model(x)[0].shape
    table = FormulaLatencyTable(per_mac=1e-6, per_layer=0.001)
    dense_ms = predict_latency(model, x, table).total_ms
    recipe = modprune.load_recipe("tokenc3-lsnet-fast")
    config = dataclasses.replace(recipe, pruner_options={**recipe.pruner_options, "align": 8})  # any CPU
    report = modprune.prune(model, config, x, latency_table=table)
    assert abs(report.achieved - 0.5) <= 0.02, report.notes
    assert report.achieved == pytest.approx(1 - predict_latency(model, x, table).total_ms / dense_ms, abs=0.005)
    mixers = [m for m in model.modules() if type(m).__name__ == "DynamicLocalMixer"]
    assert not mixers and any(n.startswith("depth: latency") for n in report.notes)
    with torch.no_grad():
        assert model(x)[0].shape == predictions


def test_fast_recipe_recommends_its_fine_tuning(tmp_path) -> None:
    """The deep cut ships the optimizer it recovered best with; the milder MACs recipe keeps auto, and both
    step once per batch."""
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

    fast = modprune.get_recipe("tokenc3-lsnet-fast")
    assert dict(fast.finetune) == {"optimizer": "SGD", "lr0": 0.01, "nominal_batch": 16}
    args = FinetuneOptions(epochs=5, imgsz=128, project_dir=tmp_path, **fast.finetune).train_args(tmp_path / "d.yaml")
    assert (args["optimizer"], args["lr0"], args["nbs"]) == ("SGD", 0.01, 16)
    assert dict(modprune.get_recipe("tokenc3-lsnet-structured").finetune) == {"nominal_batch": 16}
