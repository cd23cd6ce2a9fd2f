"""``modprune sensitivity`` and ``modprune search`` end to end on a tiny yolov8n and tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import modprune
from modprune.data import generate_dataset
from modprune.recipes import recipe_from_file


def test_sensitivity_then_search_then_prune_with_the_found_recipe(run_cli, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    pytest.importorskip("ultralytics")
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline(tmp_path / "ucfg")
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = tmp_path / "y8.pt"
    modprune.save(DetectionModel("yolov8n.yaml", nc=1, verbose=False), model)
    data = generate_dataset(tmp_path / "ds", n_train=2, n_val=2, imgsz=64, seed=0)
    common = [model, "--data", data, "--imgsz", "64", "--subset", "2", "--threads", "1"]
    res = run_cli("sensitivity", *common, "--unit", "conv", "--ratios", "0.5", "-o", tmp_path / "s.json",
                  cwd=tmp_path)
    assert res.rc == 0, res.stderr
    curves = json.loads((tmp_path / "s.json").read_text())["curves"]
    assert [c["unit"] for c in curves] == ["conv"] and curves[0]["points"][0]["macs_reduction"] > 0
    assert "val_loss" in curves[0]["points"][0] and "mAP50" in curves[0]["points"][0]
    res = run_cli("search", *common, "--budget", "macs=0.3", "--trials", "2", "--seed", "0", "--calibrate-batches", "1",
                  "--objective", "val_loss", "-o", tmp_path / "best.yaml", cwd=tmp_path)
    assert res.rc == 0, res.stderr
    assert "best so far" in res.stderr and (tmp_path / "best.optuna.db").exists()
    res = run_cli("prune", model, "--recipe", tmp_path / "best.yaml", "--imgsz", "64", "-o", tmp_path / "p.pt",
                  "--report-json", tmp_path / "r.json", cwd=tmp_path)
    assert res.rc == 0, res.stderr
    assert abs(json.loads((tmp_path / "r.json").read_text())["achieved"] - 0.3) <= 0.01
    refused = run_cli("search", *common, "--budget", "flops=0.5", "-o", tmp_path / "l.yaml", cwd=tmp_path)
    assert refused.rc == 2 and "latency" in refused.stderr  # the error lists the valid kinds
    res = run_cli("search", *common, "--budget", "macs=0.3", "--trials", "2", "--seed", "0", "--proxy-epochs", "1",
                  "--proxy-distill", "--proxy-nominal-batch", "2", "-o", tmp_path / "rec.yaml", cwd=tmp_path)
    assert res.rc == 0, res.stderr
    recipe = recipe_from_file(tmp_path / "rec.yaml")
    assert recipe.finetune == {"nominal_batch": 2} and "after 1 fine-tuning epoch" in recipe.description
    refused = run_cli("search", *common, "--budget", "macs=0.3", "--proxy-distill", "-o", tmp_path / "x.yaml",
                      cwd=tmp_path)
    assert refused.rc == 2 and "--proxy-epochs" in refused.stderr
