"""ONNX export, ONNX Runtime check against torch, sessions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from modprune.evaluate import check_onnx, export_onnx, ort_session  # noqa: E402
from modprune.exceptions import ConfigError, ModelLoadError, UnsupportedModelError  # noqa: E402
from modprune.measure.latency import measure_latency  # noqa: E402


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1)).train()


def test_export_and_check_small_net(tmp_path: Path) -> None:
    net = small_net()
    p = export_onnx(net, tmp_path / "net.onnx", 32)
    assert p.is_file() and [q.name for q in tmp_path.iterdir()] == ["net.onnx"]  # no temp file left
    assert net.training  # the caller's model is untouched
    diff = check_onnx(net, p, torch.randn(1, 3, 32, 32), atol=1e-4)
    assert 0.0 <= diff <= 1e-4


def test_dynamic_batch_and_rect(tmp_path: Path) -> None:
    p = export_onnx(small_net(), tmp_path / "dyn.onnx", (32, 48), dynamic_batch=True)
    sess = ort_session(p, threads=1)
    out = sess.run(None, {"images": torch.randn(3, 3, 32, 48).numpy()})[0]
    assert out.shape == (3, 4, 32, 48)


def test_check_detects_mismatch(tmp_path: Path) -> None:
    net = small_net()
    p = export_onnx(net, tmp_path / "a.onnx", 16)
    with torch.no_grad():
        net[3].bias += 1.0  # the torch model changed after export
    with pytest.raises(UnsupportedModelError, match="differ by"):
        check_onnx(net, p, torch.randn(1, 3, 16, 16), atol=1e-3)
    with pytest.raises(UnsupportedModelError, match="shape"):
        check_onnx(net, p, torch.randn(1, 3, 32, 32), atol=1e-3)  # exported for 16x16


def test_yolov8n_export_matches_torch(tmp_path: Path, yolov8n: nn.Module) -> None:
    p = export_onnx(yolov8n, tmp_path / "yolov8n.onnx", 64)
    sess = ort_session(p, threads=2)
    assert [o.name for o in sess.get_outputs()] == ["output0"]  # the Detect head exports one tensor
    assert sess.get_outputs()[0].shape == [1, 5, 84]  # 4 box + 1 class, 8x8 + 4x4 + 2x2 anchors
    x = torch.rand(1, 3, 64, 64)
    assert check_onnx(yolov8n, p, x, atol=1e-3) < 1e-3
    assert not yolov8n.model[-1].export  # only the copy was switched to export mode
    res = measure_latency({"torch": yolov8n, "onnx": sess}, x, rounds=3, warmup=1, threads=1)
    assert set(res["ratios"]) == {"onnx"}


def test_export_failure_is_reported(tmp_path: Path) -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.jit.is_tracing():
                raise RuntimeError("op not exportable")
            return x * 2

    with pytest.raises(UnsupportedModelError, match="torch.onnx.export failed"):
        export_onnx(Bad(), tmp_path / "bad.onnx", 16, check=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs", [{"imgsz": 4}, {"imgsz": (32,)}, {"imgsz": "64"}, {"opset": 7}, {"batch": 0}])
def test_bad_export_args(tmp_path: Path, kwargs: dict) -> None:
    args = {"imgsz": 32, **kwargs}
    with pytest.raises(ConfigError):
        export_onnx(small_net(), tmp_path / "x.onnx", **args)


def test_session_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        ort_session(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="cannot load"):
        ort_session(tmp_path / "junk.onnx")
    with pytest.raises(ConfigError):
        ort_session(tmp_path / "junk.onnx", threads=0)
    with pytest.raises(UnsupportedModelError):
        export_onnx("not a module", tmp_path / "y.onnx", 32)  # type: ignore[arg-type]
