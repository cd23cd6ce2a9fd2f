"""compare_models, the report directory, and the compare / finetune commands (behaviour, not timings)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import modprune
from modprune.measure import BUSY_LABEL, verdict
from modprune.evaluate.compare import CompareOptions, compare_models
from modprune.evaluate.report import comparison_table, write_report
from modprune.report import category_table


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))


def _pair() -> dict[str, nn.Module]:
    base = _cnn().eval()
    sparse = copy.deepcopy(base)
    modprune.prune(sparse, modprune.PruneConfig(target=0.5))
    return {"base": base, "sparse": sparse}


def test_compare_reports_counts_sizes_latency_and_verdicts():
    models = _pair()
    result = compare_models(models, options=CompareOptions(imgsz=32, rounds=5, warmup=1))
    base, sparse = result["rows"]
    assert base["params"] == sparse["params"] == 1608
    assert sparse["nonzero"] < base["nonzero"]
    assert base["macs"] == sparse["macs"] > 0  # masks do not remove multiplies
    assert sparse["sparse_fp16_bytes"] < base["sparse_fp16_bytes"]
    for prefix in ("torch", "ort"):
        assert base[f"{prefix}_median_ms"] > 0 and f"{prefix}_ratio_median" not in base
        words = sparse[f"{prefix}_verdict"]
        assert words == "no measurable change" or "by" in words or words.startswith(BUSY_LABEL)
        assert words.startswith(BUSY_LABEL) == (not sparse[f"{prefix}_reliable"])
        assert sparse[f"{prefix}_ratio_ci_low"] <= sparse[f"{prefix}_ratio_median"] <= sparse[f"{prefix}_ratio_ci_high"]
        assert sparse[f"{prefix}_p10_ms"] <= sparse[f"{prefix}_median_ms"] <= sparse[f"{prefix}_p90_ms"]
    text = comparison_table(result, markdown=False)
    assert "base" in text and "sparse" in text


def test_report_directory_has_markdown_json_and_plots(tmp_path):
    models = _pair()
    result = compare_models(models, options=CompareOptions(imgsz=32, rounds=3, warmup=0, onnx=False))
    for row, acc in zip(result["rows"], (0.5, 0.4)):  # accuracy columns as `--data` would add them
        row.update({"mAP50": acc, "mAP50-95": acc / 2})
    cats = {n: category_table(m, modprune.categorize(m)) for n, m in models.items()}
    md = write_report(result, tmp_path / "rep", categories=cats)
    assert md.read_text().startswith("# modprune comparison")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["base", "sparse"]
    for png in ("sparsity_by_category.png", "accuracy_vs_macs.png", "latency.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in md.read_text()
    assert "no measurable change" in md.read_text() or "by" in md.read_text() or BUSY_LABEL in md.read_text()


def test_tables_and_report_mark_busy_figures(tmp_path):
    """A figure measured on a busy machine is never printed as a clean one (synthetic result)."""
    row = {"params": 10, "nonzero": 5, "macs": 1e9, "sparse_fp16_bytes": 1e6, "torch_p10_ms": 9.0,
           "torch_p90_ms": 11.0, "torch_median_ms": 10.0}
    rows = [{"name": "base", **row, "torch_reliable": False},
            {"name": "pruned", **row, "torch_reliable": False,
             "torch_verdict": verdict({"median": 0.5, "ci_low": 0.4, "ci_high": 0.6, "reliable": False})},
            {"name": "quiet", **row, "torch_reliable": True, "torch_verdict": "faster by 50.0%"}]
    machine = {"torch": {"busy": True, "reasons": ["load average 9.00 on 2 cores"]}}
    result = {"rows": rows, "machine": machine, "options": {"batch": 1, "imgsz": 32, "threads": 1, "warmup": 0,
              "rounds": 10}, "torch_version": "x", "cpu_count": 2, "mac_counter": "m"}
    lines = comparison_table(result, markdown=False).splitlines()
    assert f"{BUSY_LABEL}: 10.0 [9.0-11.0]" in lines[1] and f"{BUSY_LABEL} (measured: faster by 50.0%)" in lines[2]
    assert BUSY_LABEL not in lines[3] and "10.0 [9.0-11.0]" in lines[3]
    text = write_report(result, tmp_path / "rep").read_text()
    assert f"torch latency {BUSY_LABEL}: load average 9.00 on 2 cores" in text


def test_compare_options_are_validated():
    with pytest.raises(modprune.ConfigError, match="rounds"):
        CompareOptions(rounds=2)
    with pytest.raises(modprune.ConfigError, match="imgsz"):
        CompareOptions(imgsz=0)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modprune.cli.main", *args], cwd=cwd, capture_output=True, text=True)


def test_compare_command_writes_json_and_report(tmp_path):
    for name, model in _pair().items():
        modprune.save(model, tmp_path / f"{name}.pt")
    result = _cli("compare", "base.pt", "sparse.pt", "--imgsz", "32", "--rounds", "3", "--no-onnx",
                  "--json", "out.json", "--report", "rep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[latency]" in result.stderr  # progress lines
    for line in ("[load 1/2] base.pt", "[load 2/2] sparse.pt", "[counts 1/2] base.pt", "[counts 2/2] sparse.pt"):
        assert line in result.stderr, result.stderr
    quiet = _cli("compare", "base.pt", "sparse.pt", "--imgsz", "32", "--rounds", "3", "--no-onnx", "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and "[latency]" not in quiet.stderr, quiet.stderr
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert rows[1]["nonzero"] < rows[0]["nonzero"]
    assert (tmp_path / "rep" / "report.md").is_file()


@pytest.mark.slow
def test_finetune_command_keeps_the_pruned_architecture(tmp_path, tiny_data, yolov8n):
    cfg = modprune.PruneConfig(method="structured", target=0.3, target_kind="channels")
    modprune.prune(yolov8n, cfg, example_inputs=torch.zeros(1, 3, 64, 64))
    modprune.save(yolov8n, tmp_path / "pruned.pt")
    result = _cli("finetune", "pruned.pt", "--data", str(tiny_data), "--epochs", "1", "--imgsz", "64",
                  "--batch", "4", "--distill", "pruned.pt", "-o", "tuned.pt", "--runs-dir", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tuned = modprune.load(tmp_path / "tuned.pt")
    assert modprune.measure.count_params(tuned) == modprune.measure.count_params(yolov8n)


def test_compare_checks_the_class_count_before_latency(tmp_path, tiny_data, offline_ultralytics):
    from ultralytics.nn.tasks import DetectionModel

    modprune.save(DetectionModel("yolov8n.yaml", verbose=False), tmp_path / "coco.pt")  # 80 classes
    result = _cli("compare", "coco.pt", "--data", str(tiny_data), "--imgsz", "32", "--rounds", "3", "--no-onnx",
                  cwd=tmp_path)
    assert result.returncode == 2
    assert "predicts 80 classes" in result.stderr and "has 1" in result.stderr
    assert "[latency]" not in result.stderr


def _numbers(data, path=""):
    """(key path, number) of every numeric leaf of a JSON document."""
    if isinstance(data, bool) or data is None or isinstance(data, str):
        return []
    if isinstance(data, (int, float)):
        return [(path, data)]
    if isinstance(data, dict):
        return [n for k, v in data.items() for n in _numbers(v, f"{path}.{k}")]
    return [n for i, v in enumerate(data) for n in _numbers(v, f"{path}[{i}]")]


def test_markdown_report_has_every_figure_of_the_json(tmp_path):
    """Issue 14, item 8: nothing the JSON records is missing from what people read (file sizes included)."""
    models = _pair()
    result = compare_models(models, options=CompareOptions(imgsz=32, rounds=3, warmup=0, onnx=False))
    cats = {n: category_table(m, modprune.categorize(m)) for n, m in models.items()}
    text = write_report(result, tmp_path / "rep", categories=cats).read_text()
    numbers = _numbers(json.loads((tmp_path / "rep" / "report.json").read_text()))
    assert len(numbers) > 30 and any(p.endswith("dense_fp16_bytes") for p, _ in numbers)
    rows = {line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| `")}
    missing = [(p, v) for p, v in numbers if (str(v) if isinstance(v, int) else f"{v:.6g}") not in rows]
    assert not missing, missing
    header = text.splitlines()[2]
    assert "dense fp16 MB" in header and "file MB" in header and "sparse fp16 MB" in header
    assert "input 1x3x32x32" in text


def test_plots_name_the_input_size_and_keep_legends_outside(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from modprune.evaluate import plots

    rows = [{"name": n, "macs": 1e9, "mAP50": 0.5, "torch_median_ms": 10.0, "torch_p10_ms": 9.0, "torch_p90_ms": 12.0}
            for n in ("base", "pruned-a", "pruned-b")]  # equal points: their labels must not overlap
    captured = []
    real_save = plots._save
    plots._save = lambda plt_, fig, path: (captured.append((fig, path.name)), real_save(plt_, fig, path))[1]
    try:
        written = plots.write_plots({"rows": rows, "options": {"batch": 1, "imgsz": 320, "threads": 1}},
                                    {"base": {"conv": (10, 10)}, "pruned-a": {"conv": (10, 5)}}, tmp_path)
    finally:
        plots._save = real_save
    assert sorted(p.name for p in written) == ["accuracy_vs_macs.png", "latency.png", "sparsity_by_category.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    figs = dict((name, fig) for fig, name in captured)
    lat, acc = figs["latency.png"].axes[0], figs["accuracy_vs_macs.png"].axes[0]
    assert "1x3x320x320" in lat.get_ylabel() and "1x3x320x320" in acc.get_xlabel()
    figs["latency.png"].canvas.draw()
    legend, axes = lat.get_legend().get_window_extent(), lat.get_window_extent()
    assert legend.x0 >= axes.x1  # outside the axes: covers no bar
    fig = figs["accuracy_vs_macs.png"]
    fig.canvas.draw()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t) for t in acc.texts]  # the label itself, not its connecting line
    assert len(boxes) == 3 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close("all")
