"""``modprune prune --steps K --checkpoint-dir D [--resume]``: the iterative workflow from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import modprune

RECIPE = """name: macs-30
description: structured, 30% of the MACs
config:
  method: structured
  target: 0.30
  target_kind: macs
  importance: l2
"""


def test_prune_in_steps_with_checkpoints_and_resume(run_cli, make_cnn, tmp_path: Path) -> None:
    model = tmp_path / "cnn.pt"
    modprune.save(make_cnn(width=64), model)
    (tmp_path / "r.yaml").write_text(RECIPE)
    common = ["prune", model, "--recipe", tmp_path / "r.yaml", "--imgsz", "16", "--steps", "2",
              "--checkpoint-dir", tmp_path / "ck"]
    res = run_cli(*common, "-o", tmp_path / "out.pt", "--report-json", tmp_path / "r.json", cwd=tmp_path)
    assert res.rc == 0, res.stderr
    assert "step 2/2" in res.stdout
    summary = json.loads((tmp_path / "r.json").read_text())
    assert [s["step"] for s in summary["steps"]] == [1, 2] and abs(summary["achieved"] - 0.30) <= 0.01
    assert (tmp_path / "ck" / "step-2.pt").exists()
    again = run_cli(*common, "-o", tmp_path / "out2.pt", cwd=tmp_path)
    assert again.rc != 0 and "--resume" in again.stderr
    resumed = run_cli(*common, "--resume", "-o", tmp_path / "out2.pt", cwd=tmp_path)
    assert resumed.rc == 0, resumed.stderr
    assert "step 2/2" in resumed.stdout  # both steps reported, none re-run
    out = modprune.load(tmp_path / "out2.pt")
    assert [p.shape for p in out.parameters()] == [p.shape for p in modprune.load(tmp_path / "out.pt").parameters()]
    bad = run_cli("prune", model, "--recipe", tmp_path / "r.yaml", "--imgsz", "16", "--data", "d.yaml",
                  "-o", tmp_path / "o3.pt", cwd=tmp_path)
    assert bad.rc != 0 and "--finetune-epochs" in bad.stderr


def test_prune_in_steps_on_a_cubic_schedule(run_cli, make_cnn, tmp_path: Path) -> None:
    model = tmp_path / "cnn.pt"
    modprune.save(make_cnn(width=64), model)
    (tmp_path / "r.yaml").write_text(RECIPE)
    res = run_cli("prune", model, "--recipe", tmp_path / "r.yaml", "--imgsz", "16", "--steps", "2",
                  "--schedule", "cubic", "-o", tmp_path / "out.pt", "--report-json", tmp_path / "r.json", cwd=tmp_path)
    assert res.rc == 0, res.stderr
    steps = json.loads((tmp_path / "r.json").read_text())["steps"]
    assert [round(s["wanted"], 4) for s in steps] == [round(0.30 * 0.875, 4), 0.30]  # 1 - (1 - 1/2)**3
    bad = run_cli("prune", model, "--recipe", tmp_path / "r.yaml", "--imgsz", "16", "--steps", "2",
                  "--schedule", "step", "-o", tmp_path / "o2.pt", cwd=tmp_path)
    assert bad.rc != 0 and "linear" in bad.stderr
