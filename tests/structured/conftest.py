"""Fixtures for the structured-pruning tests: models built without downloads, offline ultralytics.

Models are built once per session and handed out as deep copies. Inputs stay small (64 px) so the
whole directory runs in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Callable

import pytest
from torch import nn

import modprune

from ._support import ULTRALYTICS_MODELS, base_model


def _offline_early() -> Path | None:
    """Offline ultralytics before the test modules are imported (they build plugin managers at import,
    which imports ultralytics for its checkpoint allowlist); the config dir is a private temp dir."""
    if importlib.util.find_spec("ultralytics") is None:
        return None
    from modprune.integrations.ultralytics.offline import ensure_offline

    return ensure_offline(os.environ.get("YOLO_CONFIG_DIR") or tempfile.mkdtemp(prefix="modprune-tests-ultralytics-"))


_OFFLINE_DIR = _offline_early()


@pytest.fixture(scope="session")
def offline_ultralytics() -> Path:
    """ultralytics' settings/font dir, prepared for offline use; skips when ultralytics is not installed."""
    if _OFFLINE_DIR is None:
        pytest.skip("ultralytics is not installed")
    return _OFFLINE_DIR


@pytest.fixture(scope="session")
def pm() -> modprune.ModpruneManager:
    """One plugin manager for the session (built-ins plus installed plugins)."""
    return modprune.get_plugin_manager()


@pytest.fixture()
def build(request: pytest.FixtureRequest) -> Callable[[str], nn.Module]:
    """``build(name)``: a fresh copy of a model (ultralytics names need the offline set-up)."""

    def make(name: str) -> nn.Module:
        if name in ULTRALYTICS_MODELS:
            request.getfixturevalue("offline_ultralytics")
        return copy.deepcopy(base_model(name))

    return make
