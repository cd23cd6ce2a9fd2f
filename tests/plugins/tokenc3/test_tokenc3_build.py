"""The scale-n TokenC3-LSNet model matches the user's fork exactly; other scales build."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from torch import nn

from modprune_tokenc3_lsnet import CFG_DIR, build_model
from modprune_tokenc3_lsnet.blocks import HyperACE, TokenC3
from modprune_tokenc3_lsnet.parse import load_cfg, parse_model

# Facts of the user's model (scale n, nc=1), from the state_dict manifest of the fork.
EXPECTED_PARAMS = 4_719_701
EXPECTED_ENTRIES = 1331
# sha256 of "\n".join(f"{key}:{','.join(shape)}") over the manifest's (key, shape) entries, in order.
MANIFEST_SHA256 = "60b60d54650ec506ee700e3fc11e53951692928e22ad3edd2801999c56d19563"
# sha256 of the user's yolov13_lsnet_p2_simple.yaml, which the plugin ships unchanged.
USER_YAML_SHA256 = "081a87acb1eb585c13ca41f2251e26f223c4c393eb54b8c31fe4a231ee2b7ba1"


def manifest_digest(model: nn.Module) -> tuple[int, str]:
    """Return (entries, sha256) of the model's state_dict keys and shapes, in order."""
    sd = model.state_dict()
    text = "\n".join(f"{k}:{','.join(str(s) for s in v.shape)}" for k, v in sd.items())
    return len(sd), hashlib.sha256(text.encode()).hexdigest()


def test_user_yaml_shipped_unchanged():
    data = (CFG_DIR / "yolov13_lsnet_p2_simple.yaml").read_bytes()
    assert hashlib.sha256(data).hexdigest() == USER_YAML_SHA256


def test_parameter_count(model_n):
    assert sum(p.numel() for p in model_n.parameters()) == EXPECTED_PARAMS


def test_state_dict_names_and_shapes_match_fork(model_n):
    assert manifest_digest(model_n) == (EXPECTED_ENTRIES, MANIFEST_SHA256)


def test_cleaned_yaml_builds_the_same_model():
    d = load_cfg("yolov13n-tokenc3-lsnet-p2.yaml")
    assert d["scale"] == "n"
    layers, _ = parse_model(d, ch=3, verbose=False)
    model = nn.Module()
    model.model = layers
    names = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    reference, _ = parse_model(load_cfg("yolov13n_lsnet_p2_simple.yaml"), ch=3, verbose=False)
    ref = nn.Module()
    ref.model = reference
    assert names == [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]


def test_ultralytics_model_attributes(model_n):
    assert [m.i for m in model_n.model] == list(range(32))
    assert model_n.model[9].f == [4, 6, 8]
    assert model_n.model[9].type == "modprune_tokenc3_lsnet.blocks.hyperace.HyperACE"
    assert model_n.model[0].type == "ultralytics.nn.modules.conv.Conv"
    assert all(m.np == sum(p.numel() for p in m.parameters()) for m in model_n.model)
    assert model_n.stride.tolist() == [4.0, 8.0, 16.0]
    assert model_n.model[-1].stride.tolist() == [4.0, 8.0, 16.0]
    assert model_n.names == {0: "0"}
    assert model_n.yaml["scale"] == "n" and model_n.yaml["nc"] == 1
    assert set(model_n.save) == {2, 4, 6, 8, 9, 10, 11, 12, 13, 17, 18, 21, 22, 23, 27, 30}
    assert model_n.model[-1].legacy is False  # v11-style head (depthwise class branch)


def test_batchnorm_settings_and_split_sizes(model_n):
    bns = [m for m in model_n.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    token = [m for m in model_n.modules() if isinstance(m, TokenC3)]
    assert [(m.ls_channels, m.reg_channels) for m in token][:4] == [(19, 13), (38, 26), (36, 28), (76, 52)]
    assert all(type(m.ls_channels) is int and type(m.reg_channels) is int for m in token)
    hyper = model_n.model[9]
    assert isinstance(hyper, HyperACE) and hyper.split_sizes == [64, 64, 64]


@pytest.mark.parametrize("size", [320, 640])
def test_forward_eval_shapes(model_n, size):
    model = copy.deepcopy(model_n).eval()
    with torch.no_grad():
        y, _ = model(torch.rand(1, 3, size, size))
    anchors = sum((size // s) ** 2 for s in (4, 8, 16))
    assert y.shape == (1, 4 + 1, anchors)
    assert torch.isfinite(y).all()


def test_forward_train_feature_maps(model_n):
    model = copy.deepcopy(model_n).train()
    out = model(torch.rand(2, 3, 320, 320))
    assert [tuple(f.shape) for f in out["feats"]] == [(2, 32, 80, 80), (2, 64, 40, 40), (2, 128, 20, 20)]
    anchors = 80 * 80 + 40 * 40 + 20 * 20
    assert out["boxes"].shape == (2, 64, anchors) and out["scores"].shape == (2, 1, anchors)


def _parse_scale(scale: str) -> nn.Sequential:
    d = load_cfg(f"yolov13{scale}_lsnet_p2_simple.yaml")
    assert d["scale"] == scale
    layers, _ = parse_model(d, ch=3, verbose=False)
    return layers


@pytest.mark.parametrize(
    ("scale", "hyper_c", "edges", "adjust"), [("s", 128, 8, True), ("l", 256, 8, False), ("x", 384, 12, False)]
)
def test_other_scales_parse(scale, hyper_c, edges, adjust):
    layers = _parse_scale(scale)
    hyper = layers[9]
    assert hyper.split_sizes == [hyper_c] * 3
    assert hyper.branch1.m.hgnn.edge_generator.prototype_base.shape[0] == edges
    assert isinstance(layers[11].channel_adjust, nn.Identity) is not adjust
    assert layers[-1].legacy is False


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["s", "l", "x"])
def test_other_scales_build_and_run(scale):
    model = build_model(f"yolov13{scale}_lsnet_p2_simple.yaml").eval()
    assert model.stride.tolist() == [4.0, 8.0, 16.0]
    with torch.no_grad():
        y, _ = model(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 5, 16 * 16 + 8 * 8 + 4 * 4)
