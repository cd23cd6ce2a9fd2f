"""Deployable exports: ultralytics-exported ONNX of pruned models that run where modprune cannot be
imported, ONNX Runtime INT8, portable checkpoints, and one-line errors for bad export arguments."""

from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import modprune
from modprune.cli import main as cli_main
from modprune.evaluate.export import export_model

pytest.importorskip("onnxruntime")

BLOCKED = Path(__file__).with_name("_blocked.py")

# Runs in a process where `import modprune` / `import modprune_tokenc3_lsnet` fail.
SNIPPET = """
import json, sys
args = json.loads(sys.argv[1])
try:
    import modprune  # noqa: F401
    raise SystemExit("modprune was importable")
except ModuleNotFoundError:
    pass
from ultralytics import YOLO
out = {}
for path in args["models"]:
    y = YOLO(path, task="detect")
    r = y.predict(args["image"], imgsz=args["imgsz"], verbose=False, conf=0.0001)
    m = y.val(data=args["data"], imgsz=args["imgsz"], batch=4, plots=False, verbose=False, workers=0)
    out[path] = {"boxes": int(r[0].boxes.shape[0]), "map50": float(m.box.map50),
                 "modules": sorted({type(x).__module__.split(".")[0] for x in getattr(y.model, "modules", list)()})}
print("RESULT " + json.dumps(out))
"""


def run_without_modprune(tmp_path: Path, config_dir: Path, **args) -> dict:
    """Run SNIPPET (or args['code']) with modprune and its plugin blocked; return its RESULT dict."""
    script = tmp_path / "snippet.py"
    script.write_text(args.pop("code", SNIPPET))
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "YOLO_CONFIG_DIR": str(config_dir)}
    proc = subprocess.run([sys.executable, str(BLOCKED), str(script), json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _pruned(model, recipe: str = "structured-30"):
    modprune.prune(model, modprune.load_recipe(recipe), example_inputs=torch.zeros(1, 3, 64, 64))
    return model.eval()


def _ort(path: Path, x: torch.Tensor) -> np.ndarray:
    from modprune.evaluate.onnx_export import ort_session

    sess = ort_session(path, 1)
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _image(data_yaml: Path) -> str:
    return str(sorted((data_yaml.parent / "images" / "val").iterdir())[0])


@pytest.mark.slow
def test_pruned_yolov8n_onnx_and_int8_run_without_modprune(yolov8n, tiny_data, offline_ultralytics, tmp_path):
    model = _pruned(yolov8n)
    fp32 = export_model(model, tmp_path / "pruned.onnx", imgsz=64)
    int8 = export_model(model, tmp_path / "pruned_int8.onnx", imgsz=64, int8=True, data=tiny_data,
                        calibration_images=8)
    assert fp32.exporter == "ultralytics" and int8.calibration_images == 8
    assert int8.size_bytes < fp32.size_bytes / 2  # INT8 weights
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    got = _ort(fp32.path, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-3)  # fused BN: float rounding only
    q = _ort(int8.path, x)
    boxes = np.corrcoef(q[0, :4].ravel(), ref[0, :4].ravel())[0, 1]
    logits = np.corrcoef(np.log(q[0, 4:] + 1e-9).ravel(), np.log(ref[0, 4:] + 1e-9).ravel())[0, 1]
    assert boxes > 0.99 and logits > 0.9, (boxes, logits)
    out = run_without_modprune(tmp_path, offline_ultralytics.parent, models=[str(fp32.path), str(int8.path)],
                               image=_image(tiny_data), data=str(tiny_data), imgsz=64)
    for result in out.values():
        assert result["boxes"] >= 0 and 0.0 <= result["map50"] <= 1.0


@pytest.mark.slow
def test_pruned_tokenc3_lsnet_onnx_runs_without_the_plugin(tiny_data, offline_ultralytics, tmp_path):
    plugin = pytest.importorskip("modprune_tokenc3_lsnet")
    model = plugin.build_model("yolov13n_lsnet_p2_simple.yaml")
    cfg = modprune.PruneConfig(method="structured", target=0.2, target_kind="channels", importance="l2")
    modprune.prune(model, cfg, example_inputs=torch.zeros(1, 3, 64, 64))
    plugin.deactivate()
    model.eval()
    from modprune.integrations.ultralytics.portable import required_packages

    assert "modprune-tokenc3-lsnet" in required_packages(model)
    res = export_model(model, tmp_path / "tokenc3.onnx", imgsz=64)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    np.testing.assert_allclose(_ort(res.path, x), ref, atol=5e-3, rtol=1e-3)
    out = run_without_modprune(tmp_path, offline_ultralytics.parent, models=[str(res.path)],
                               image=_image(tiny_data), data=str(tiny_data), imgsz=64)
    assert 0.0 <= out[str(res.path)]["map50"] <= 1.0


LOAD_PT = """
import json, sys
from ultralytics import YOLO
args = json.loads(sys.argv[1])
try:
    y = YOLO(args["pt"])
    mods = sorted({type(x).__module__.split(".")[0] for x in y.model.modules()})
    print("RESULT " + json.dumps({"ok": True, "modules": mods, "requires": y.ckpt["modprune"]["requires"]}))
except ModuleNotFoundError as e:
    print("RESULT " + json.dumps({"ok": False, "error": str(e)}))
"""


@pytest.mark.slow
def test_equal_halves_save_as_ultralytics_classes_and_load_without_modprune(yolov8n, offline_ultralytics, tmp_path):
    config = modprune.load_recipe("structured-30")
    config = dataclasses.replace(config, pruner_options={**config.pruner_options, "portable": True})
    modprune.prune(yolov8n, config, example_inputs=torch.zeros(1, 3, 64, 64))  # the C2f halves end equal
    model = yolov8n.eval()
    path = modprune.save(model, tmp_path / "pruned.pt")
    loaded = modprune.load(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0])
    out = run_without_modprune(tmp_path, offline_ultralytics.parent, code=LOAD_PT, pt=str(path))
    assert out == {"ok": True, "modules": ["torch", "ultralytics"], "requires": []}


@pytest.mark.slow
def test_equalize_split_widths_makes_unequal_halves_portable(yolov8n):
    from modprune.integrations.ultralytics.blocks import SplitBlock
    from modprune.integrations.ultralytics.portable import (equalize_split_widths, required_packages, split_widths,
                                                            to_stock_blocks)

    model = _pruned(yolov8n, "structured-50")
    assert any(len(set(split_widths(b))) > 1 for b in model.modules() if isinstance(b, SplitBlock))
    assert required_packages(model) == ["modprune"]
    x = torch.zeros(1, 3, 64, 64)
    changed = equalize_split_widths(model, x)
    assert changed and all(len(set(split_widths(b))) == 1 for b in model.modules() if isinstance(b, SplitBlock))
    import copy

    stock = copy.deepcopy(model)
    assert to_stock_blocks(stock) == [] and required_packages(stock) == []
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(stock(x)[0], model(x)[0])


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite", "-o", "{tmp}/m.tflite"], "unknown export format 'tflite'"),
    (["--int8", "-o", "{tmp}/m.onnx"], "INT8 needs calibration images"),
    (["-o", "{tmp}/missing/m.onnx"], "does not exist"),
    (["-o", "{tmp}/m.bin"], "must be named '*.onnx'"),
    (["--int8", "--data", "{tmp}/nope.yaml", "-o", "{tmp}/m.onnx"], "does not exist"),
])
def test_bad_export_arguments_give_one_line_and_write_nothing(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = sorted(tmp_path.rglob("*"))
    rc = cli_main(["export", "yolov8n.yaml", "--imgsz", "64", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and message in err[0], err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_compare_int8_rows_time_and_validate_the_exported_graphs(yolov8n, tiny_data, offline_ultralytics):
    from modprune.evaluate.compare import CompareOptions, compare_models
    from modprune.evaluate.report import comparison_table

    opts = CompareOptions(imgsz=64, threads=1, rounds=3, warmup=1, data=str(tiny_data), val_imgsz=64, int8=True,
                          calibration_images=4)
    result = compare_models({"base": yolov8n}, options=opts)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["base", "base int8"]
    assert rows["base"]["quantization"] == "fp32" and rows["base int8"]["quantization"] == "int8"
    for row in rows.values():
        assert row["ort_median_ms"] > 0 and 0.0 <= row["mAP50"] <= 1.0
    assert rows["base int8"]["file_bytes"] < rows["base"]["dense_fp16_bytes"]
    assert "base int8" in comparison_table(result)


def test_compare_int8_needs_data():
    from modprune.evaluate.compare import CompareOptions
    from modprune.exceptions import ConfigError

    with pytest.raises(ConfigError, match="int8 rows need"):
        CompareOptions(int8=True)


def _split_halves(model) -> list[tuple[int, int]]:
    from modprune.integrations.ultralytics.blocks import SplitBlock
    from modprune.integrations.ultralytics.portable import split_widths

    return [split_widths(b) for b in model.modules() if isinstance(b, SplitBlock)]


@pytest.mark.slow
def test_portable_pruner_option_keeps_split_halves_equal(yolov8n):
    import copy
    import dataclasses

    from modprune.integrations.ultralytics.portable import required_packages, to_stock_blocks

    cfg = modprune.load_recipe("structured-50")  # without the option, two C2f blocks end unequal
    cfg = dataclasses.replace(cfg, pruner_options={**cfg.pruner_options, "portable": True})
    assert modprune.PruneConfig.from_dict(cfg.to_dict()).pruner_options["portable"] is True
    report = modprune.prune(yolov8n, cfg, example_inputs=torch.zeros(1, 3, 64, 64))
    halves = _split_halves(yolov8n)
    assert halves and all(a == b for a, b in halves), halves
    assert any(n.startswith("portable: ") and "narrowed" in n for n in report.notes), report.notes
    stock = copy.deepcopy(yolov8n).eval()
    assert to_stock_blocks(stock) == [] and required_packages(stock) == []
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(stock(x)[0], yolov8n.eval()(x)[0])


def test_portable_pruner_option_is_validated():
    from modprune.pruners.structured import StructuredOptions

    assert StructuredOptions().portable is False and StructuredOptions(portable=True).portable is True
    with pytest.raises(modprune.ConfigError, match="portable must be true or false"):
        StructuredOptions(portable="yes")


@pytest.mark.slow
def test_cli_portable_flag_sets_the_pruner_option(offline_ultralytics, tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    rc = cli_main(["prune", "yolov8n.yaml", "--recipe", "structured-50", "--portable", "--imgsz", "64",
                   "-o", str(out), "--report-json", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["pruner_options"] == {"round_to": 16, "portable": True}
    from modprune.serialization import load_file

    meta = load_file(out)["modprune"]  # what the checkpoint pickles, before modprune re-splits it on load
    assert meta["portable"] is True and meta["requires"] == [] and len(meta["stock_blocks"]) == 8


def test_unwritable_output_folder_gives_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    def refuse(*args, **kwargs):  # the folder cannot be written (as for a non-root user on a 0o500 folder)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    rc = cli_main(["export", "yolov8n.yaml", "--imgsz", "64", "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "is not writable (Permission denied)" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_int8_without_calibration_images_gives_one_line_and_writes_nothing(tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data.parent, data)
    for image in (data / "images" / "train").iterdir():
        image.unlink()
    yaml = data / tiny_data.name
    yaml.write_text(yaml.read_text().replace(str(tiny_data.parent), str(data)))
    out = tmp_path / "out"
    out.mkdir()
    rc = cli_main(["export", "yolov8n.yaml", "--imgsz", "64", "--int8", "--data", str(data / tiny_data.name),
                   "-o", str(out / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "train" in err[0], err
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_openvino_int8_export_correlates_with_fp32(yolov8n, tiny_data, offline_ultralytics, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import openvino as ov

    model = yolov8n.eval()
    res = export_model(model, tmp_path / "m_int8_openvino_model", format="openvino", imgsz=64, int8=True,
                       data=tiny_data, calibration_images=4)
    assert res.exporter == "ultralytics+nncf-int8" and res.calibration_images == 4
    xml = next(res.path.glob("*.xml"))
    assert (res.path / "metadata.yaml").is_file()
    core = ov.Core()
    ops = [op.get_type_name() for op in core.read_model(str(xml)).get_ordered_ops()]
    assert ops.count("FakeQuantize") >= 10, "no INT8 quantisation in the graph"
    compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": 1})
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    q = next(iter(compiled({0: x.numpy()}).values()))
    assert q.shape == ref.shape
    boxes = np.corrcoef(q[0, :4].ravel(), ref[0, :4].ravel())[0, 1]
    logits = np.corrcoef(np.log(q[0, 4:] + 1e-9).ravel(), np.log(ref[0, 4:] + 1e-9).ravel())[0, 1]
    assert boxes > 0.99 and logits > 0.9, (boxes, logits)
    from modprune.integrations.ultralytics.validate import validate_exported

    acc = validate_exported(res.path, tiny_data, imgsz=64)
    assert 0.0 <= acc["mAP50"] <= 1.0
