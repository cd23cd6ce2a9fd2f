"""activate()/deactivate(): ultralytics builds the plugin's yamls and stock yamls exactly as before."""

from __future__ import annotations

import pytest
from ultralytics import YOLO
from ultralytics.engine import model as engine_model
from ultralytics.nn import tasks
from ultralytics.nn.tasks import DetectionModel

from modprune_tokenc3_lsnet import CFG_DIR, activate, activated, deactivate, is_active

STOCK_YAMLS = ("yolov8n.yaml", "yolo11n.yaml", "yolo12n.yaml")


def _originals():
    return tasks.parse_model, tasks.yaml_model_load, engine_model.yaml_model_load


def _layout(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _signature(model):
    return _layout(model), sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def stock_signatures():
    assert not is_active()
    return {name: _signature(DetectionModel(name, verbose=False)) for name in STOCK_YAMLS}


@pytest.mark.parametrize("name", STOCK_YAMLS)
def test_stock_yamls_identical_while_active(name, stock_signatures):
    activate()
    layout, params = _signature(DetectionModel(name, verbose=False))
    assert params == stock_signatures[name][1]
    assert layout == stock_signatures[name][0]


def test_activate_deactivate_idempotent():
    before = _originals()
    activate()
    wrapped = _originals()
    assert all(w is not o for w, o in zip(wrapped, before))
    activate()
    assert _originals() == wrapped
    deactivate()
    assert _originals() == before
    deactivate()
    assert _originals() == before and not is_active()


def test_activated_context_restores_state():
    before = _originals()
    with activated():
        assert is_active()
        with activated():
            assert is_active()
        assert is_active()
    assert _originals() == before and not is_active()
    activate()
    with activated():
        pass
    assert is_active()


def test_yolo_builds_plugin_yaml_by_name_only_while_active():
    with pytest.raises(FileNotFoundError):
        YOLO("yolov13n_lsnet_p2_simple.yaml")
    activate()
    model = YOLO("yolov13n_lsnet_p2_simple.yaml")
    assert type(model.model) is DetectionModel and model.task == "detect"
    assert sum(p.numel() for p in model.model.parameters()) == 4_719_701
    assert model.model.yaml["scale"] == "n"
    by_path = DetectionModel(str(CFG_DIR / "yolov13-tokenc3-lsnet-p2.yaml"), verbose=False)
    assert by_path.yaml["scale"] == ""  # no scale letter in the path: the first scale (n) is used
    assert sum(p.numel() for p in by_path.parameters()) == 4_719_701
    deactivate()
    with pytest.raises(KeyError):
        DetectionModel(str(CFG_DIR / "yolov13-tokenc3-lsnet-p2.yaml"), verbose=False)


def test_rewrapped_parse_model_survives_deactivate():
    original = tasks.parse_model
    activate()
    ours = tasks.parse_model

    def outer(d, ch, verbose=True):
        return ours(d, ch, verbose)

    tasks.parse_model = outer
    try:
        deactivate()
        assert tasks.parse_model is outer  # someone else's wrapper is left in place ...
        with pytest.raises(KeyError):  # ... but ours no longer dispatches
            DetectionModel(str(CFG_DIR / "yolov13-tokenc3-lsnet-p2.yaml"), verbose=False)
    finally:
        tasks.parse_model = original
