"""The recovery proxy: every scored model is a fine-tuned copy; the model handed in is never changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import modprune
from modprune.data import generate_dataset

pytest.importorskip("ultralytics")


class Recorder:
    """A score that keeps what it was handed and scores the sum of its weights."""

    def __init__(self) -> None:
        self.seen: list[torch.nn.Module] = []

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        self.seen.append(model)
        return {"weight_sum": float(sum(p.detach().double().sum() for p in model.parameters()))}


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_each_model_is_fine_tuned_before_it_is_scored(tmp_path: Path) -> None:
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline(tmp_path / "ucfg")
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.proxy import RecoveryScorer
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

    torch.manual_seed(0)
    teacher = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    modprune.prune(model, modprune.PruneConfig(method="structured", target=0.3, importance="l1"),
                   torch.zeros(1, 3, 64, 64))
    data = generate_dataset(tmp_path / "ds", n_train=4, n_val=2, imgsz=64, seed=0)
    before, record = _weights(model), Recorder()
    options = FinetuneOptions(epochs=1, imgsz=64, batch=2, project_dir=tmp_path / "runs", nominal_batch=2)
    scorer = RecoveryScorer(record, data, options, teacher=teacher)
    first, second = scorer(model), scorer(model)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model)))  # the model handed in: untouched
    tuned = record.seen[0]
    assert tuned is not model and [p.shape for p in tuned.parameters()] == [p.shape for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, _weights(tuned)))  # it was trained
    assert first == pytest.approx(second) and scorer.calls == 2  # same options, same seed: the same score
    assert first["weight_sum"] != pytest.approx(Recorder()(model)["weight_sum"], rel=1e-9)


def test_bad_recovery_settings_are_refused(tmp_path: Path) -> None:
    from modprune.integrations.ultralytics.proxy import RecoveryScorer
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

    options = FinetuneOptions(epochs=1, imgsz=64, project_dir=tmp_path)
    with pytest.raises(modprune.ConfigError, match="callable"):
        RecoveryScorer("mAP50", "data.yaml", options)
    with pytest.raises(modprune.ConfigError, match="FinetuneOptions"):
        RecoveryScorer(Recorder(), "data.yaml", {"epochs": 1})
    with pytest.raises(modprune.ConfigError, match="resume"):
        RecoveryScorer(Recorder(), "data.yaml", FinetuneOptions(epochs=1, imgsz=64, project_dir=tmp_path, resume=True))
