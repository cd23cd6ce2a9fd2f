"""modprune leaves the user's ultralytics environment as it was, and sees the same settings as ``YOLO()``.

The user has an ultralytics config dir with their own ``settings.json`` (a custom ``datasets_dir``) and a
dataset yaml whose ``path:`` is relative to that ``datasets_dir``, as ultralytics accepts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ultralytics")

from modprune.data import generate_dataset  # noqa: E402

SRC = str(Path(__import__("modprune").__file__).resolve().parents[1])


def _env(home: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "MODPRUNE_", "XDG_"))}
    env.update(HOME=str(home), YOLO_CONFIG_DIR=str(config))
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def user_setup(tmp_path: Path) -> tuple[dict[str, str], Path, Path, Path]:
    home, config, datasets = tmp_path / "home", tmp_path / "config", tmp_path / "my-datasets"
    home.mkdir()
    env = _env(home, config)
    # the user's ultralytics wrote its settings once (offline here); then they set their datasets_dir
    done = subprocess.run([sys.executable, "-c", "import ultralytics.utils"], env={**env, "YOLO_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    settings_file = config / "Ultralytics" / "settings.json"
    settings = json.loads(settings_file.read_text())
    settings.update(datasets_dir=str(datasets), runs_dir=str(tmp_path / "my-runs"))
    settings_file.write_text(json.dumps(settings, indent=2))
    generate_dataset(datasets / "drones", n_train=4, n_val=4, imgsz=64, seed=0)
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.yaml").write_text("path: drones\ntrain: images/train\nval: images/val\nnames:\n  0: drone\n")
    return env, config, datasets, work


@pytest.mark.slow  # fresh processes importing ultralytics: ~15 s idle, a minute on a busy machine
def test_commands_leave_the_settings_and_config_dir_byte_identical(user_setup) -> None:
    env, config, _datasets, work = user_setup
    before = _snapshot(config)
    home_before = _snapshot(Path(env["HOME"]))
    for argv in (["inspect", "yolov8n.yaml", "--imgsz", "64"], ["data", "check", "data.yaml"]):
        done = subprocess.run([sys.executable, "-m", "modprune.cli.main", *argv], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
    assert _snapshot(config) == before
    assert _snapshot(Path(env["HOME"])) == home_before  # no config dir of modprune's own, no font copies


@pytest.mark.slow
def test_modprune_and_yolo_see_the_same_settings_in_one_process(user_setup) -> None:
    env, config, datasets, work = user_setup
    before = _snapshot(config)
    code = textwrap.dedent("""
        import json
        import modprune
        from modprune.integrations.ultralytics import ensure_offline
        ensure_offline()
        from modprune.data import check_dataset
        summary = check_dataset("data.yaml")
        from ultralytics import YOLO
        from ultralytics.data.utils import check_det_dataset
        from ultralytics.utils import DATASETS_DIR, RUNS_DIR, SETTINGS
        YOLO("yolov8n.yaml")
        theirs = check_det_dataset("data.yaml")
        print(json.dumps({"datasets_dir": str(DATASETS_DIR), "runs_dir": str(RUNS_DIR), "root": str(summary.root),
                          "their_root": str(theirs["path"]), "sync": SETTINGS["sync"]}))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["datasets_dir"] == str(datasets)
    assert res["runs_dir"] == str(datasets.parent / "my-runs")
    assert res["root"] == res["their_root"] == str(datasets / "drones")
    assert res["sync"] is False  # off for this process, in memory
    assert _snapshot(config) == before
