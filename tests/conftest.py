"""Shared test set-up: the tiny third-party plugin is installed before collection, so the default
plugin manager (and every test parametrised over its strategies) includes it."""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

# modprune uses the user's ultralytics config dir; the tests use a private one (read by ultralytics at import).
if "YOLO_CONFIG_DIR" not in os.environ:
    _CONFIG_DIR = tempfile.mkdtemp(prefix="modprune-tests-yolo-")
    atexit.register(shutil.rmtree, _CONFIG_DIR, ignore_errors=True)
    os.environ["YOLO_CONFIG_DIR"] = _CONFIG_DIR
    if importlib.util.find_spec("ultralytics") is not None:  # its first-run settings message, once, here
        subprocess.run([sys.executable, "-c", "import ultralytics.utils"], env={**os.environ, "YOLO_OFFLINE": "1"},
                       capture_output=True, timeout=300, check=False)

TEST_PLUGIN_DIST = "modprune-test-plugin"
TEST_PLUGIN_DIR = Path(__file__).parent / "third_party_plugin"


def ensure_test_plugin() -> None:
    """``pip install --no-deps -e tests/third_party_plugin`` unless it is installed (idempotent, offline)."""
    try:
        importlib.metadata.distribution(TEST_PLUGIN_DIST)
    except importlib.metadata.PackageNotFoundError:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
             "--no-build-isolation", "-e", str(TEST_PLUGIN_DIR)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:  # the tests that need it fail and say so; the others still run
            warnings.warn(f"could not install {TEST_PLUGIN_DIR}: {done.stderr.strip()[-500:]}", stacklevel=1)
            return
    src = str(TEST_PLUGIN_DIR / "src")
    if importlib.util.find_spec("modprune_test_plugin") is None and src not in sys.path:
        sys.path.insert(0, src)  # a fresh editable install is on sys.path only from the next start
        importlib.invalidate_caches()


def pytest_configure(config: pytest.Config) -> None:
    ensure_test_plugin()
    from modprune.plugins import reset_default_plugin_manager

    reset_default_plugin_manager()


def _small_cnn(seed: int = 0, width: int = 16, classes: int = 10) -> nn.Sequential:
    """A small CNN with conv, depthwise conv, norm and a linear head; deterministic weights."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width),
        nn.Conv2d(width, 2 * width, 1),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    )


@pytest.fixture()
def make_cnn():
    """Factory ``make_cnn(seed=0, width=16, classes=10)`` of small CNNs for 16x16 RGB inputs."""
    return _small_cnn


@pytest.fixture()
def cnn() -> nn.Sequential:
    """A fresh small CNN (conv, depthwise conv, batch norm, linear head; ~10.8k parameters)."""
    return _small_cnn()


@pytest.fixture()
def image() -> torch.Tensor:
    """One 1x3x16x16 input for :func:`cnn`."""
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
