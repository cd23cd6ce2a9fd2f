"""Model yamls are code to ultralytics' parser: modprune validates them before any parser sees them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

import modprune
from modprune.model_yaml import validate_model_cfg

BASE = {
    "nc": 2,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
    "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 0], 1, "Concat", [1]], [[2], 1, "Detect", ["nc"]]],
}


def _with(marker: Path, field: str) -> tuple[dict[str, Any], str]:
    """BASE with one hostile field; returns (cfg, the field path the refusal must name)."""
    touch = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    cfg: dict[str, Any] = yaml.safe_load(yaml.safe_dump(BASE))
    if field == "activation-eval":
        cfg["activation"] = f"{touch} or nn.SiLU()"
        return cfg, "activation"
    if field == "activation-unknown":
        cfg["activation"] = "nn.Conv2d(3, 3, 1)"
        return cfg, "activation"
    if field == "module-os-system":
        cfg["head"][0][2] = "os.system"
        return cfg, r"head[0][2]: module 'os.system'"
    if field == "module-loader-function":  # resolved in ultralytics.nn.tasks' globals: unpickles a file
        cfg["backbone"][1] = [-1, 1, "torch_safe_load", ["other.pt"]]
        return cfg, r"backbone[1][2]: module 'torch_safe_load'"
    if field == "module-nested-model":  # a DetectionModel built from another, unvalidated yaml
        cfg["backbone"][1] = [-1, 1, "DetectionModel", ["evil.yaml"]]
        return cfg, r"backbone[1][2]: module 'DetectionModel'"
    if field == "module-torchvision":  # downloads weights in its constructor
        cfg["backbone"][1] = [-1, 1, "TorchVision", [16, "resnet18", "DEFAULT"]]
        return cfg, r"backbone[1][2]: module 'TorchVision'"
    if field == "argument-expression":
        cfg["backbone"][0][3] = [8, touch, 2]
        return cfg, r"backbone[0][3][1]"
    if field == "argument-mapping":
        cfg["backbone"][0][3] = [8, {"k": 3}, 2]
        return cfg, r"backbone[0][3][1]"
    if field == "unknown-key":
        cfg["hook"] = "os.system"
        return cfg, "hook: unknown top-level key"
    if field == "bad-scales":
        cfg["scales"] = {"n": "[0.5, 0.25, 1024]"}
        return cfg, "scales"
    raise AssertionError(field)


FIELDS = [
    "activation-eval",
    "activation-unknown",
    "module-os-system",
    "module-loader-function",
    "module-nested-model",
    "module-torchvision",
    "argument-expression",
    "argument-mapping",
    "unknown-key",
    "bad-scales",
]


@pytest.mark.parametrize("field", FIELDS)
def test_hostile_yaml_is_refused_naming_the_field(run_cli: Any, tmp_path: Path, field: str) -> None:
    marker = tmp_path / "code-ran"
    cfg, named = _with(marker, field)
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump(cfg))
    result = run_cli("inspect", tmp_path / "evil.yaml", cwd=tmp_path)
    assert result.rc == 2, (result.stdout, result.stderr)
    assert len(result.stderr_lines) == 1 and named in result.stderr and "--trust-pickle" in result.stderr
    assert not marker.exists()


def test_yaml_tags_are_refused(run_cli: Any, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (tmp_path / "tag.yaml").write_text(f"nc: !!python/object/apply:os.system ['touch {marker}']\nbackbone: []\nhead: []\n")
    result = run_cli("inspect", tmp_path / "tag.yaml", cwd=tmp_path)
    assert result.rc == 2 and len(result.stderr_lines) == 1 and "YAML tag" in result.stderr
    assert not marker.exists()


def test_a_clean_yaml_builds_and_trust_pickle_skips_the_check(run_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(BASE))
    assert run_cli("inspect", tmp_path / "ok.yaml", "--imgsz", "32", cwd=tmp_path).rc == 0
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["notes"] = "a key modprune does not know"
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(cfg))
    assert run_cli("inspect", tmp_path / "extra.yaml", "--imgsz", "32", cwd=tmp_path).rc == 2
    assert run_cli("inspect", tmp_path / "extra.yaml", "--imgsz", "32", "--trust-pickle", cwd=tmp_path).rc == 0


def test_torchvision_yaml_never_reaches_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def no_network(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg, _ = _with(tmp_path / "m", "module-torchvision")
    (tmp_path / "tv.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(modprune.UnsafeCheckpointError, match="TorchVision"):
        modprune.load(tmp_path / "tv.yaml")
    assert attempts == []


def test_a_checkpoint_carrying_a_hostile_yaml_is_refused(tmp_path: Path) -> None:
    """ultralytics rebuilds a model from ``model.yaml`` when it trains; a checkpoint's yaml is input too."""
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(BASE))
    model = modprune.load(tmp_path / "ok.yaml")
    model.yaml["activation"] = "__import__('os').system('true') or nn.SiLU()"
    modprune.save(model, tmp_path / "m.pt")
    with pytest.raises(modprune.UnsafeCheckpointError, match="activation"):
        modprune.load(tmp_path / "m.pt")
    assert modprune.load(tmp_path / "m.pt", trust_pickle=True).yaml["activation"].endswith("nn.SiLU()")


def _bundled_yamls() -> list[Path]:
    import ultralytics

    from modprune_tokenc3_lsnet.parse import CFG_DIR

    return sorted((Path(ultralytics.__file__).parent / "cfg" / "models").rglob("*.yaml")) + sorted(CFG_DIR.glob("*.yaml"))


def test_every_bundled_model_yaml_passes_except_torchvision_ones() -> None:
    """The real check of the allowlists: ultralytics' own configs and the plugin's validate."""
    yamls = _bundled_yamls()
    assert len(yamls) > 50
    refused = []
    for path in yamls:
        cfg = yaml.safe_load(path.read_text())
        try:
            validate_model_cfg(cfg, path.name)
        except modprune.UnsafeCheckpointError as exc:
            assert "TorchVision" in str(exc), exc
            refused.append(path.name)
    assert refused == ["yolo11-cls-resnet18.yaml"]
