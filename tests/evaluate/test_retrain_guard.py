"""Stock ``YOLO("pruned.pt").train()`` stops in one line instead of training the unpruned network (issue 14.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modprune.model_yaml import PRUNED_SCALE, dense_cfg, is_marked, marked_cfg, validate_model_cfg

pytest.importorskip("ultralytics")

from modprune.serialization import load_file  # noqa: E402 - after the skip: loading needs ultralytics' classes


def _cfg(scales: bool = True) -> dict:
    cfg = {"nc": 1, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [[-1, 1, "Conv", [16, 3, 1]]]}
    if scales:
        cfg.update(scales={"n": [0.33, 0.25, 1024]}, scale="n")
    else:
        cfg.update(depth_multiple=0.33, width_multiple=0.25)
    return cfg


@pytest.mark.parametrize("scales", [True, False])
def test_the_mark_round_trips_and_passes_the_yaml_check(scales: bool) -> None:
    cfg = _cfg(scales)
    marked = marked_cfg(cfg)
    assert is_marked(marked) and not is_marked(cfg)
    assert marked["scale"] == PRUNED_SCALE and marked["scales"]  # ultralytics reads scale only with scales
    assert marked_cfg(marked) == marked  # idempotent
    assert dense_cfg(marked) == cfg
    validate_model_cfg(marked, "test")  # a marked checkpoint still loads under modprune's restricted loader


def test_ultralytics_refuses_to_build_from_a_marked_yaml(offline_ultralytics: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    with pytest.raises(KeyError, match="PrunedModelTrainer"):
        DetectionModel(marked_cfg(_cfg()), verbose=False)


@pytest.mark.slow  # structured pruning of yolov8n and an ultralytics trainer set-up: ~15-30 s
def test_stock_train_of_a_pruned_checkpoint_stops_with_one_line(yolov8n, tiny_data: Path, tmp_path: Path) -> None:
    import torch
    from ultralytics import YOLO

    import modprune
    from modprune.workflows.thin_baseline import model_cfg

    dense_yaml = dict(yolov8n.yaml)
    modprune.prune(yolov8n, modprune.PruneConfig(method="structured", target=0.3), torch.zeros(1, 3, 64, 64))
    path = modprune.save(yolov8n, tmp_path / "pruned.pt")
    assert yolov8n.yaml == dense_yaml  # the live model is not changed by saving
    n_pruned = sum(p.numel() for p in yolov8n.parameters())

    yolo = YOLO(str(path))  # loading, counting and running are unaffected by the mark
    assert sum(p.numel() for p in yolo.model.parameters()) == n_pruned
    yolo.model.eval()(torch.zeros(1, 3, 64, 64))
    with pytest.raises(KeyError) as err:
        yolo.train(data=str(tiny_data), epochs=1, imgsz=64, batch=4, workers=0, device="cpu",
                   project=str(tmp_path / "runs"), name="stock", exist_ok=True, plots=False, val=False)
    message = str(err.value)
    assert "\n" not in message and "pruned by modprune" in message and "PrunedModelTrainer" in message
    assert not list((tmp_path / "runs").rglob("*.pt"))  # nothing was trained (the trainer made only its folders)

    reloaded = modprune.load(path)  # modprune's own loader checks the embedded yaml: the mark is allowed
    assert sum(p.numel() for p in reloaded.parameters()) == n_pruned
    assert model_cfg(reloaded) == dense_yaml  # code that wants the dense yaml gets it back


def test_a_checkpoint_that_its_yaml_rebuilds_is_not_marked(yolov8n, tmp_path: Path) -> None:
    import modprune

    path = modprune.save(yolov8n, tmp_path / "dense.pt")
    ckpt = load_file(path)  # modprune's restricted reader: no pickle code runs
    assert not is_marked(ckpt["model"].yaml)
    assert ckpt["modprune"]["retrain_guard"] is False


@pytest.mark.slow  # one tiny epoch of ultralytics training: ~10-20 s
def test_checkpoints_of_a_training_run_are_marked_too(yolov8n, tiny_data: Path, tmp_path: Path) -> None:
    import torch

    import modprune
    from modprune.integrations.ultralytics.trainer import PrunedModelTrainer

    modprune.prune(yolov8n, modprune.PruneConfig(method="structured", target=0.3), torch.zeros(1, 3, 64, 64))
    overrides = dict(data=str(tiny_data), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                     amp=False, val=False, project=str(tmp_path / "runs"), name="ft", exist_ok=True)
    trainer = PrunedModelTrainer(overrides=overrides, model=yolov8n)
    trainer.train()
    last = load_file(tmp_path / "runs" / "ft" / "weights" / "last.pt")
    # ultralytics strips the EMA after the run; a plain YOLO("last.pt").train() stops too
    assert is_marked((last["ema"] or last["model"]).yaml)
    assert not is_marked(yolov8n.yaml)
