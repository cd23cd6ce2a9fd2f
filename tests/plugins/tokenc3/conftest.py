"""Fixtures for the TokenC3-LSNet plugin tests (CPU only, offline)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# ultralytics reads these at import time: keep it offline and out of the user's config dir.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
if "YOLO_CONFIG_DIR" not in os.environ:
    _config_dir = tempfile.mkdtemp(prefix="modprune-tokenc3-yolo-")
    atexit.register(shutil.rmtree, _config_dir, ignore_errors=True)
    os.environ["YOLO_CONFIG_DIR"] = _config_dir

try:
    import modprune_tokenc3_lsnet
    import ultralytics  # noqa: F401
except ImportError:  # plugin not installed: skip this directory
    modprune_tokenc3_lsnet = None
    collect_ignore_glob = ["test_*.py"]


def place_font(ultralytics_dir: Path) -> Path:
    """Copy matplotlib's DejaVuSans.ttf to ``ultralytics_dir/Arial.ttf`` so ultralytics never downloads its font."""
    import matplotlib

    target = ultralytics_dir / "Arial.ttf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", target)
    return target


if modprune_tokenc3_lsnet is not None:
    place_font(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")


@pytest.fixture(scope="session")
def model_n():
    """The scale-n model built once per session (do not mutate: deepcopy first)."""
    return modprune_tokenc3_lsnet.build_model("yolov13n_lsnet_p2_simple.yaml")


@pytest.fixture(autouse=True)
def _plugin_inactive_after():
    """Leave ultralytics unpatched after every test."""
    yield
    if modprune_tokenc3_lsnet is not None:
        modprune_tokenc3_lsnet.deactivate()
