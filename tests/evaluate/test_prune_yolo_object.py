"""``modprune.prune(YOLO(...), ...)`` prunes the wrapped network in place; it never trains or downloads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ultralytics")


@pytest.mark.slow  # a fresh process importing ultralytics and torch-pruning: ~15-30 s on a busy machine
def test_prune_a_yolo_object_with_the_structured_pruner(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import json, os, socket
        attempts = []
        def guard(name):
            def blocked(*args, **kwargs):
                attempts.append(name)
                raise OSError("network disabled by test")
            return blocked
        socket.socket.connect = guard("connect")
        socket.create_connection = guard("create_connection")
        socket.getaddrinfo = guard("getaddrinfo")
        os.environ["YOLO_CONFIG_DIR"] = {str(tmp_path / "cfg")!r}
        import torch, modprune
        from ultralytics import YOLO
        from ultralytics.engine.model import Model
        def no_train(self, *a, **k):
            if a or k.get("trainer") or k.get("data"):
                raise AssertionError("YOLO.train called with " + repr((a, k)))
            raise AssertionError("YOLO.train called")
        Model.train = no_train
        yolo = YOLO("yolov8n.yaml")
        attempts.clear()  # ultralytics' own import-time online probe is the user's, not modprune's
        before = sum(p.numel() for p in yolo.model.parameters())
        report = modprune.prune(yolo, modprune.PruneConfig(method="structured", target=0.3),
                                torch.zeros(1, 3, 64, 64))
        after = sum(p.numel() for p in yolo.model.parameters())
        y = yolo.model.eval()(torch.zeros(1, 3, 64, 64))
        print(json.dumps({{"attempts": attempts, "before": before, "after": after,
                          "achieved": report.achieved, "cwd": sorted(os.listdir("."))}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert result["after"] < result["before"]
    assert result["achieved"] > 0.2
    assert not (tmp_path / "runs").exists() and "datasets" not in result["cwd"]


def test_a_yolo_object_without_a_network_is_refused_in_one_line(offline_ultralytics: Path) -> None:
    import modprune
    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml")
    yolo.model = None
    with pytest.raises(modprune.UnsupportedModelError, match="holds no loaded network") as err:
        modprune.prune(yolo, modprune.PruneConfig(method="structured", target=0.3))
    assert "\n" not in str(err.value)


@pytest.mark.slow  # structured pruning of yolov8n plus one tiny epoch: ~20-40 s
def test_stock_yolo_train_with_modprunes_trainer_keeps_the_pruned_model(
    yolov8n, tiny_data: Path, tmp_path: Path
) -> None:
    import torch
    from ultralytics import YOLO

    import modprune
    from modprune.integrations.ultralytics.trainer import PrunedModelTrainer

    modprune.prune(yolov8n, modprune.PruneConfig(method="structured", target=0.3), torch.zeros(1, 3, 64, 64))
    n_pruned = sum(p.numel() for p in yolov8n.parameters())
    path = modprune.save(yolov8n, tmp_path / "pruned.pt")
    yolo = YOLO(str(path))
    assert sum(p.numel() for p in yolo.model.parameters()) == n_pruned
    yolo.train(trainer=PrunedModelTrainer, data=str(tiny_data), epochs=1, imgsz=64, batch=4, workers=0,
               device="cpu", project=str(tmp_path / "runs"), name="stock", exist_ok=True, plots=False, amp=False,
               val=False)
    assert sum(p.numel() for p in yolo.trainer.model.parameters()) == n_pruned
    assert sum(p.numel() for p in yolo.model.parameters()) == n_pruned  # reloaded from the run's checkpoint
    assert (tmp_path / "runs" / "stock" / "weights" / "last.pt").exists()
