"""The honest baseline: width-multiple matching to a MACs target, built from scratch, and compare's row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import modprune
from modprune.exceptions import ConfigError
from modprune.measure import count_macs

IMGSZ = 64


@pytest.fixture(scope="module")
def v8n_cfg(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("ultralytics")
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline(tmp_path_factory.mktemp("ultralytics_cfg_thin"))
    from modprune.workflows.thin_baseline import model_cfg, scaled_cfg, width_of

    cfg = model_cfg("yolov8n.yaml")
    return scaled_cfg(cfg, width_of(cfg), nc=1)


def test_scaled_cfg_changes_only_the_models_own_width(v8n_cfg):
    from modprune.workflows.thin_baseline import scaled_cfg, width_of

    thin = scaled_cfg(v8n_cfg, 0.2)
    assert width_of(v8n_cfg) == 0.25 and width_of(thin) == 0.2
    assert thin["scales"] == {"n": [0.33, 0.2, 1024]} and thin["nc"] == 1  # depth and channel cap kept
    assert scaled_cfg({"width_multiple": 0.5, "backbone": [], "head": []}, 0.3)["width_multiple"] == 0.3
    with pytest.raises(ConfigError):
        scaled_cfg(v8n_cfg, 0)


def test_bisection_matches_the_target_macs_and_builds_from_scratch(v8n_cfg, tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    from modprune.workflows.thin_baseline import build_thin, match_width

    x = torch.zeros(1, 3, IMGSZ, IMGSZ)
    base = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    with torch.no_grad():
        for p in base.parameters():
            p.fill_(0.123)  # a mark no freshly initialised tensor carries
    target = int(0.6 * count_macs(base, x))
    match = match_width(v8n_cfg, target, IMGSZ, tmp_path)
    assert match.target_macs == target and abs(match.relative_error) <= 0.02
    assert 0.1 < match.width < 0.25 and match.steps <= 12
    thin = build_thin(v8n_cfg, match.width, tmp_path / "yolov8n-thin.yaml", seed=0)
    assert count_macs(thin, x) == match.macs  # the width found builds the model that was counted
    base_ptrs = {p.data_ptr() for p in base.parameters()}
    trainable = [p for p in thin.parameters() if p.requires_grad]
    assert all(p.data_ptr() not in base_ptrs for p in thin.parameters())
    assert not any(bool((p == 0.123).all()) for p in trainable)  # random init, nothing copied from the base
    assert modprune.measure.count_params(thin) < modprune.measure.count_params(base)
    with pytest.raises(ConfigError, match="at most the full-width"):
        match_width(v8n_cfg, 10 * target, IMGSZ, tmp_path)


def test_model_cfg_needs_a_yaml_on_a_plain_module():
    from modprune.exceptions import ModelLoadError
    from modprune.workflows.thin_baseline import model_cfg

    with pytest.raises(ModelLoadError, match="model yaml"):
        model_cfg(torch.nn.Conv2d(3, 8, 3))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modprune.cli.main", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow  # ~30 s idle: a subprocess, a 3-build bisection, 1 epoch on 8 images, three models compared
def test_compare_adds_the_thin_row_trained_on_the_data(tmp_path, tiny_data, yolov8n):
    modprune.save(yolov8n, tmp_path / "base.pt")
    cfg = modprune.PruneConfig(method="structured", target=0.4, target_kind="macs")
    modprune.prune(yolov8n, cfg, example_inputs=torch.zeros(1, 3, IMGSZ, IMGSZ))
    modprune.save(yolov8n, tmp_path / "pruned.pt")
    result = _cli("compare", "base.pt", "pruned.pt", "--data", str(tiny_data), "--imgsz", str(IMGSZ), "--rounds", "3",
                  "--no-onnx", "--thin-baseline", "1", "--thin-batch", "4", "--thin-nominal-batch", "4", "--thin-out", "thin", "--json", "out.json",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert len(rows) == 3 and rows[2]["name"].startswith("thin w=")
    assert abs(rows[2]["macs"] / rows[1]["macs"] - 1) <= 0.02 and rows[2]["macs"] < rows[0]["macs"]
    assert "mAP50" in rows[2] and (tmp_path / "thin" / "thin.pt").is_file()
    assert (tmp_path / "thin" / "runs" / "thin" / "results.csv").is_file()  # it was trained
    assert yaml.safe_load((tmp_path / "thin" / "runs" / "thin" / "args.yaml").read_text())["nbs"] == 4


def test_widths_that_do_not_build_are_stepped_over(monkeypatch, tmp_path):
    """A block that needs a multiple of 32 channels: the search lands on the closest width that builds."""
    import math

    from modprune.workflows import thin_baseline as tb

    def channels(width: float) -> int:
        return 8 * math.ceil(512 * width / 8)

    def fake_macs(cfg, width, workdir, imgsz):
        if channels(width) % 32:
            raise ValueError(f"hidden width {channels(width)} must be a multiple of 32")
        return channels(width) ** 2

    monkeypatch.setattr(tb, "_macs_at", fake_macs)
    cfg = {"scales": {"n": [0.5, 0.25, 1024]}, "scale": "n", "backbone": [], "head": []}
    match = tb.match_width(cfg, int(0.6 * 128 ** 2), 64, tmp_path)
    assert match.macs == 96 ** 2 and channels(match.width) == 96  # 112 channels would be closer but cannot build
    assert match.relative_error == pytest.approx(96 ** 2 / int(0.6 * 128 ** 2) - 1)


def test_a_band_of_widths_that_do_not_build_does_not_end_the_search(monkeypatch, tmp_path):
    from modprune.workflows import thin_baseline as tb

    def fake_macs(cfg, width, workdir, imgsz):
        if 0.05 < width < 0.15:
            raise ValueError("this band does not build")
        return int(1e6 * width ** 2)

    monkeypatch.setattr(tb, "_macs_at", fake_macs)
    cfg = {"width_multiple": 0.25, "backbone": [], "head": []}
    match = tb.match_width(cfg, int(1e6 * 0.04 ** 2), 64, tmp_path)  # below the band
    assert abs(match.relative_error) <= 0.02 and match.width < 0.05
