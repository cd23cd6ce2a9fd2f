"""Checkpoints pickled by the user's fork (classes under ultralytics.nn.modules.*) load through compat."""

from __future__ import annotations

import contextlib
import copy
import os
import zipfile

import pytest
import torch
import ultralytics.utils
import ultralytics.utils.checks
from ultralytics.nn import tasks
from ultralytics.nn.modules import block as ul_block
from ultralytics.nn.modules import conv as ul_conv

from modprune import serialization
from modprune_tokenc3_lsnet import FORK_CLASS_PATHS, fork_aliases, load_fork_checkpoint
from modprune_tokenc3_lsnet.blocks import HyperACE, TokenC3


@contextlib.contextmanager
def pickled_as_fork():
    """Make the plugin's classes pickle under the fork's ultralytics paths (test helper)."""
    with fork_aliases():
        saved = [(cls, cls.__module__) for cls in FORK_CLASS_PATHS.values()]
        for path, cls in FORK_CLASS_PATHS.items():
            cls.__module__ = path.rsplit(".", 1)[0]
        try:
            yield
        finally:
            for cls, module in saved:
                cls.__module__ = module


def _fork_like(model_n):
    """A copy with random weights/BN statistics and the fork's attribute set (no reg_channels/split_sizes)."""
    model = copy.deepcopy(model_n)
    torch.manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.1)
    for m in model.modules():
        if isinstance(m, TokenC3):
            del m.reg_channels
        if isinstance(m, HyperACE):
            del m.split_sizes
    for layer in model.model:
        layer.type = layer.type.replace("modprune_tokenc3_lsnet.blocks.lsnet", "ultralytics.nn.modules.block")
        layer.type = layer.type.replace("modprune_tokenc3_lsnet.blocks.hyperace", "ultralytics.nn.modules.block")
        layer.type = layer.type.replace("modprune_tokenc3_lsnet.blocks.yolov13.DSConv", "ultralytics.nn.modules.conv.DSConv")
        layer.type = layer.type.replace("modprune_tokenc3_lsnet.blocks.yolov13", "ultralytics.nn.modules.block")
    return model


@pytest.fixture(scope="module")
def fork_checkpoint(model_n, tmp_path_factory):
    model = _fork_like(model_n)
    path = tmp_path_factory.mktemp("fork") / "best.pt"
    ckpt = {"epoch": -1, "model": model.half(), "ema": None, "train_args": {"imgsz": 640}, "version": "8.3.63"}
    with pickled_as_fork():
        torch.save(ckpt, path)
    return path, model


def test_checkpoint_references_fork_paths(fork_checkpoint):
    path, _ = fork_checkpoint
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert b"ultralytics.nn.modules.block\nTokenC3" in data
    assert b"ultralytics.nn.modules.conv\nDSConv" in data
    assert b"modprune_tokenc3_lsnet" not in data
    assert not hasattr(ul_block, "TokenC3") and not hasattr(ul_conv, "DSConv")
    with pytest.raises(AttributeError):
        torch.load(path, weights_only=False)


def test_fork_checkpoint_loads_strict_without_autoinstall(fork_checkpoint, monkeypatch):
    path, original = fork_checkpoint
    monkeypatch.setenv("YOLO_AUTOINSTALL", "True")
    monkeypatch.setattr(ultralytics.utils, "AUTOINSTALL", True)
    monkeypatch.setattr(ultralytics.utils.checks, "AUTOINSTALL", True)

    def no_install(*args, **kwargs):
        raise AssertionError("auto-install triggered")

    seen = []
    real_load_file = serialization.load_file

    def spy(*args, **kwargs):
        seen.append((os.environ["YOLO_AUTOINSTALL"], ultralytics.utils.checks.AUTOINSTALL, ul_block.TokenC3))
        return real_load_file(*args, **kwargs)

    monkeypatch.setattr(tasks, "check_requirements", no_install)
    monkeypatch.setattr(serialization, "load_file", spy)  # modprune's restricted loader

    ckpt = load_fork_checkpoint(path)

    assert seen == [("False", False, TokenC3)]
    assert os.environ["YOLO_AUTOINSTALL"] == "True" and ultralytics.utils.checks.AUTOINSTALL is True
    assert not hasattr(ul_block, "TokenC3") and not hasattr(ul_conv, "DSConv")
    model = ckpt["model"]
    assert ckpt["train_args"] == {"imgsz": 640} and ckpt["ema"] is None
    assert isinstance(model, tasks.DetectionModel) and next(model.parameters()).dtype == torch.float32
    expected = original.state_dict()
    loaded = model.state_dict()
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value.to(loaded[key].dtype), msg=key)
    assert all(isinstance(m.reg_channels, int) for m in model.modules() if isinstance(m, TokenC3))
    with torch.no_grad():
        y, _ = model.eval()(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 5, 16 * 16 + 8 * 8 + 4 * 4)


def test_fork_checkpoint_raw_objects(fork_checkpoint):
    path, _ = fork_checkpoint
    raw = load_fork_checkpoint(path, rebuild=False)["model"]
    assert isinstance(raw.model[2], TokenC3) and not hasattr(raw.model[2], "reg_channels")


def test_fork_aliases_restore_existing_attributes(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(ul_block, "TokenC3", sentinel, raising=False)
    with fork_aliases():
        assert ul_block.TokenC3 is TokenC3
    assert ul_block.TokenC3 is sentinel


def test_missing_checkpoint_is_not_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_fork_checkpoint(tmp_path / "missing.pt")
