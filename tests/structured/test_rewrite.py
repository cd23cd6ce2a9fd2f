"""The ultralytics model preparation: split blocks compute exactly what the original blocks did."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import modprune
from modprune.integrations.ultralytics.blocks import SPLIT_BLOCKS, SplitBlock
from ._support import ULTRALYTICS_MODELS, example, randomise_norms

pytestmark = pytest.mark.usefixtures("offline_ultralytics")


def _rewrite(model: nn.Module) -> list:
    from modprune.integrations.ultralytics.rewrite import rewrite_blocks

    return rewrite_blocks(model)


@pytest.mark.parametrize("name", ULTRALYTICS_MODELS)
def test_rewritten_model_has_identical_outputs(name: str, build) -> None:
    model = build(name)
    x = example(96, batch=2)
    with torch.no_grad():
        before = model(x)[0]
    done = _rewrite(model)
    assert done, "expected split blocks in every ultralytics model tested"
    chunked = {"C2f", "C3k2", "C2PSA", "C2", "PSA"}
    assert not [n for n, m in model.named_modules() if type(m).__name__ in chunked]
    with torch.no_grad():
        after = model(x)[0]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


#: (block, its constructor arguments, input channels) for every ultralytics block the rewrite handles.
BLOCKS = {
    "C2": ("C2", (32, 32, 1), {}, 32),
    "C2f": ("C2f", (32, 48, 2), {}, 32),
    "C3k2": ("C3k2", (32, 32, 1), {"c3k": True}, 32),
    "C3k2-attn": ("C3k2", (64, 64, 1), {"attn": True}, 64),
    "C2fCIB": ("C2fCIB", (32, 32, 1), {}, 32),
    "C2fPSA": ("C2fPSA", (64, 64, 1), {}, 64),
    "C2PSA": ("C2PSA", (64, 64, 1), {}, 64),
    "PSA": ("PSA", (64, 64), {}, 64),
    "RepNCSPELAN4": ("RepNCSPELAN4", (32, 32, 32, 16, 1), {}, 32),
    "ELAN1": ("ELAN1", (32, 32, 32, 16), {}, 32),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("fused", [False, True], ids=["bn", "fused"])
def test_each_block_rewrite_is_exact(name: str, fused: bool) -> None:
    from ultralytics.nn.modules import block as ub

    cls, args, kwargs, channels = BLOCKS[name]
    torch.manual_seed(0)
    block = getattr(ub, cls)(*args, **kwargs)
    model = nn.Sequential(block).eval()
    randomise_norms(model)
    if fused:  # ultralytics' fuse(): BatchNorm folded into the conv, forward -> forward_fuse
        from ultralytics.utils.torch_utils import fuse_conv_and_bn
        from ultralytics.nn.modules.conv import Conv

        for m in model.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
    x = torch.randn(2, channels, 8, 8)
    with torch.no_grad():
        before = model(x)
    done = _rewrite(model)
    assert len(done) == 1 and isinstance(model[0], SplitBlock)
    assert model[0].c == model[0].cv1b.conv.out_channels or isinstance(model[0], SPLIT_BLOCKS[1])
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_layer_bookkeeping_attributes_are_kept(build) -> None:
    model = build("yolov8n")
    old = {i: (m.i, m.f, m.type) for i, m in enumerate(model.model)}
    _rewrite(model)
    assert {i: (m.i, m.f, m.type) for i, m in enumerate(model.model)} == old


def test_split_blocks_pickle_and_load_weights_only(build, pm) -> None:
    model = build("yolov8n")
    _rewrite(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(modprune.serialization.safe_globals(pm)):
        loaded = torch.load(buffer, weights_only=True)
    x = example()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)


def test_non_ultralytics_models_are_untouched() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
    before = copy.deepcopy(model)
    assert _rewrite(model) == []
    assert str(model) == str(before)


def test_plugin_modules_do_not_import_ultralytics() -> None:
    code = textwrap.dedent(
        """
        import sys
        import modprune.integrations.ultralytics.plugin, modprune.integrations.ultralytics.blocks
        import modprune.integrations.ultralytics.rewrite, modprune.integrations.ultralytics.detectors
        import modprune.integrations.ultralytics.checkpoint, modprune.pruners.structured
        print(sorted(m for m in sys.modules if m.split(".")[0] == "ultralytics"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
