"""A core install (no extras): every command says which extra to install instead of failing obscurely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import modprune

ROOT = Path(__file__).resolve().parents[2]
WITHOUT = Path(__file__).with_name("_without.py")
HINT = "pip install 'modprune[ultralytics]'"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _run_all(tmp: Path, commands: list[list[str]], block: str) -> list[Ran]:
    """Run each command line in its own directory under ``tmp`` with ``block`` packages unimportable."""
    requests = []
    for i, argv in enumerate(commands):
        cwd = tmp / f"c{i}"
        cwd.mkdir()
        torch.save({"w": torch.ones(1)}, cwd / "m.pt")
        requests.append({"argv": argv, "cwd": str(cwd), "stdout": str(cwd / "out"), "stderr": str(cwd / "err")})
    (tmp / "requests.json").write_text(json.dumps(requests))
    env = dict(os.environ, MODPRUNE_TEST_BLOCK=block,
               PYTHONPATH=os.pathsep.join([str(Path(modprune.__file__).parents[1]),
                                           str(ROOT / "plugins" / "tokenc3-lsnet" / "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(WITHOUT), str(tmp / "requests.json")], env=env, capture_output=True,
                          text=True, timeout=600, check=True)
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    return [Ran(rc, Path(r["stdout"]).read_text(), Path(r["stderr"]).read_text()) for rc, r in zip(codes, requests)]


@pytest.fixture(scope="module")
def ultralytics_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ultralytics-style checkpoint (written while ultralytics is installed, read without it)."""
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=2, verbose=False).half(), "train_args": {}}, path)
    return path


COMMANDS = {
    "prune-checkpoint": ["prune", "{ckpt}", "--recipe", "structured-30", "-o", "out.pt"],
    "prune-checkpoint-trusted": ["prune", "{ckpt}", "--recipe", "structured-30", "-o", "out.pt", "--trust-pickle"],
    "inspect-yaml": ["inspect", "yolov8n.yaml"],
    "compare": ["compare", "yolov8n.yaml", "{ckpt}"],
    "prune-plugin-yaml": ["prune", "yolov13n_lsnet_p2_simple.yaml", "--recipe", "structured-30", "-o", "o.pt"],
    "finetune": ["finetune", "m.pt", "--data", "d.yaml", "--epochs", "1", "-o", "f.pt"],
    "demo": ["demo", "--quick"],
    "plugins": ["plugins"],
}


@pytest.fixture(scope="module")
def without_ultralytics(tmp_path_factory: pytest.TempPathFactory, ultralytics_checkpoint: Path) -> dict[str, Ran]:
    commands = [[a.replace("{ckpt}", str(ultralytics_checkpoint)) for a in argv] for argv in COMMANDS.values()]
    return dict(zip(COMMANDS, _run_all(tmp_path_factory.mktemp("noul"), commands, "ultralytics")))


@pytest.mark.slow  # one subprocess runs every command (~60 s of CPU on 2 cores)
@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "plugins"])
def test_commands_without_ultralytics_name_the_extra(without_ultralytics: dict[str, Ran], name: str) -> None:
    r = without_ultralytics[name]
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert HINT in last, last
    assert "trust-pickle" not in last and "does not exist" not in last and "internal error" not in last
    assert "Traceback" not in r.stderr
    assert "skipping part of plugin" not in r.stderr  # the TokenC3 plugin stands down quietly


@pytest.mark.slow
def test_plugins_lists_the_skipped_integration(without_ultralytics: dict[str, Ran]) -> None:
    r = without_ultralytics["plugins"]
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "modprune.integrations.ultralytics.plugin" in x)
    assert "skipped" in line and HINT in line


def test_skipped_integrations_recorded_on_the_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    from modprune.plugins import get_plugin_manager

    assert get_plugin_manager(entry_points=False).skipped_integrations == {}
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    pm = get_plugin_manager(entry_points=False)
    assert "ultralytics" in pm.skipped_integrations["modprune.integrations.ultralytics.plugin"]
    assert "modprune.integrations.ultralytics.plugin" not in pm.plugin_info


def test_data_synth_without_pillow_names_the_extra(tmp_path: Path) -> None:
    (r,) = _run_all(tmp_path, [["data", "synth", "d", "--train", "2", "--val", "2"]], "PIL,ultralytics")
    assert r.returncode == 2, r.stderr
    assert "pip install 'modprune[data]'" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "c0" / "d").exists()


def test_package_metadata_has_no_upper_cap_on_torch() -> None:
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"] + [d for extra in meta["optional-dependencies"].values() for d in extra]
    for dep in deps:
        if dep.startswith(("torch>", "torch=", "torch<", "torchvision")):
            assert "<" not in dep, dep
    extras = meta["optional-dependencies"]
    assert any(d.startswith("pillow") for d in extras["data"]) and any(d.startswith("matplotlib")
                                                                       for d in extras["plots"])
    assert any(d.startswith("safetensors") for d in meta["dependencies"])


def test_every_builtin_command_help_has_examples() -> None:
    import argparse

    from modprune.cli.main import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        assert "examples:\n  modprune " + name in sub.choices[name].format_help(), name


def test_debug_and_quiet_accepted_after_the_subcommand() -> None:
    from modprune.cli.main import build_parser

    args = build_parser().parse_args(["inspect", "m.pt", "--debug", "-q"])
    assert args.debug and args.quiet
    assert not build_parser().parse_args(["inspect", "m.pt"]).debug
