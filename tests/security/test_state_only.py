"""In-process checks of the restricted unpickler: objects come from stored state, never from their code."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from ultralytics.nn.tasks import DetectionModel

import _models
import modprune
from _hostile import dumps, global_op, raw_pickle, torch_archive
from modprune import hookimpl
from modprune.plugins import get_plugin_manager
from modprune.serialization import load_file


class _Allow:
    @hookimpl
    def modprune_register_safe_globals(self) -> list[type]:
        return [_models.Sentinel, _models.SentinelNew, _models.SentinelList]


@pytest.fixture
def pm() -> Any:
    _models.CALLS.clear()
    return get_plugin_manager(entry_points=False, plugins=[_Allow()])


def _raw_save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)  # torch.save: no class manifest
    return path


def test_allowlisted_class_is_rebuilt_without_init_or_setstate(pm: Any, tmp_path: Path) -> None:
    model = _models.Sentinel()
    _models.CALLS.clear()
    loaded = load_file(_raw_save(model, tmp_path / "s.pt"), pm=pm)
    assert _models.CALLS == []
    assert isinstance(loaded, _models.Sentinel) and torch.equal(loaded.conv.weight, model.conv.weight)


def test_a_python_new_is_refused(pm: Any, tmp_path: Path) -> None:
    path = torch_archive(tmp_path / "n.pt", raw_pickle(global_op(_models.__name__, "SentinelNew"), b")\x81"))
    with pytest.raises(modprune.UnsafeCheckpointError, match="__new__"):
        load_file(path, pm=pm)
    assert _models.CALLS == []


def test_containers_methods_never_run(pm: Any, tmp_path: Path) -> None:
    """APPEND on an allowlisted list-like module would call its own append()."""
    conv = dumps(nn.Identity())[2:-1]
    data = raw_pickle(global_op(_models.__name__, "SentinelList"), b")\x81", conv, b"a")
    with pytest.raises(modprune.UnsafeCheckpointError, match="APPEND"):
        load_file(torch_archive(tmp_path / "a.pt", data), pm=pm)
    assert _models.CALLS == []


@pytest.mark.parametrize(
    ("attr", "value", "match"),
    [
        ("forward", nn.ReLU(), "replace its method 'forward'"),
        ("act_class", DetectionModel, "would hold the class"),  # allowlisted, but a constructor
        ("_forward_hooks", {0: nn.ReLU()}, "installs hooks"),
    ],
)
def test_state_that_would_redirect_code_is_refused(tmp_path: Path, attr: str, value: Any, match: str) -> None:
    model = nn.Conv2d(3, 4, 1)
    model.__dict__[attr] = value
    with pytest.raises(modprune.UnsafeCheckpointError, match=match):
        load_file(_raw_save(model, tmp_path / "m.pt"))


def test_functions_are_refused_even_when_importable(tmp_path: Path) -> None:
    path = torch_archive(tmp_path / "f.pt", dumps({"f": _models.sentinel_function}))
    with pytest.raises(modprune.UnsafeCheckpointError, match="sentinel_function"):
        load_file(path)


def _with_manifest(tmp_path: Path, classes: list[str]) -> Path:
    buffer = io.BytesIO()
    torch.save(nn.Conv2d(3, 4, 1), buffer)
    with zipfile.ZipFile(buffer) as src:
        data = src.read(next(n for n in src.namelist() if n.endswith("data.pkl")))
    return torch_archive(tmp_path / "m.pt", data, {"modprune.json": json.dumps({"manifest": 1, "classes": classes}).encode()})


@pytest.mark.parametrize("entry", ["os:system", "antigravity:Fly", "json:JSONDecoder"])
def test_manifest_cannot_name_standard_library_objects(tmp_path: Path, entry: str) -> None:
    sys.modules.pop("antigravity", None)
    with pytest.raises(modprune.UnsafeCheckpointError, match=entry):
        load_file(_with_manifest(tmp_path, [entry]))
    assert "antigravity" not in sys.modules  # never imported (importing it opens a web browser)


def test_manifest_cannot_name_non_module_classes(tmp_path: Path) -> None:
    with pytest.raises(modprune.UnsafeCheckpointError, match="not an nn.Module"):
        load_file(_with_manifest(tmp_path, ["ultralytics.nn.tasks:torch_safe_load"]))


def test_own_files_round_trip_third_party_classes(tmp_path: Path) -> None:
    model = nn.Sequential(_models.Block(), nn.ReLU()).eval()
    modprune.save(model, tmp_path / "b.pt")
    loaded = modprune.load(tmp_path / "b.pt")
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(model(x), loaded(x)) and loaded[0].scale == 0.5


def test_torchvision_resnet_round_trips_through_the_cli(run_cli: Any, tmp_path: Path) -> None:
    modprune.save(torchvision.models.resnet18(num_classes=3), tmp_path / "r.pt")
    with zipfile.ZipFile(tmp_path / "r.pt") as archive:
        manifest = json.loads(archive.read(next(n for n in archive.namelist() if n.endswith("modprune.json"))))
    assert "torchvision.models.resnet:ResNet" in manifest["classes"]
    result = run_cli("inspect", tmp_path / "r.pt", "--imgsz", "32", cwd=tmp_path)
    assert result.rc == 0, result.stderr
    assert "trust" not in result.stderr.lower()
