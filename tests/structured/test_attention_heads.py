"""Attention pruned by whole heads or head dimensions, and the time budget on tracing.

Layouts are checked against a reference: removing a head (or dims) must give exactly the output of
the unpruned module with that head's (or those dims') contribution zeroed.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

import modprune
from modprune.pruners.heads import HeadLayout, prune_attention
from modprune.pruners.structured import StructuredOptions

timm = pytest.importorskip("timm")


def _structured(target: float = 0.3, **options) -> modprune.PruneConfig:
    return modprune.PruneConfig(method="structured", target=target, target_kind="macs", pruner_options=options)


# --- timm ------------------------------------------------------------------------------------


def _timm_attention(dim: int = 32, heads: int = 4) -> nn.Module:
    from timm.layers import Attention

    torch.manual_seed(0)
    return Attention(dim, num_heads=heads, qkv_bias=True).eval()


def _timm_layout(module: nn.Module) -> HeadLayout:
    from modprune.integrations.timm.plugin import timm_attention_heads

    (layout,) = timm_attention_heads(nn.Sequential(module))
    return layout


def test_timm_head_removal_equals_zeroing_that_head() -> None:
    module = _timm_attention()
    d = module.head_dim
    with torch.no_grad():  # head 2 the weakest: q, k, v rows scaled down
        for part in range(3):
            module.qkv.weight[part * 32 + 2 * d: part * 32 + 3 * d] *= 1e-3
    reference = copy.deepcopy(module)
    with torch.no_grad():
        reference.proj.weight[:, 2 * d: 3 * d] = 0
    x = torch.randn(2, 5, 32)
    lines = prune_attention([("attn", _timm_layout(module), 0.25)], "heads")
    assert lines == ["attn (Attention): 4 -> 3 heads"]
    assert (module.num_heads, module.head_dim, module.attn_dim) == (3, d, 3 * d)
    assert module.qkv.out_features == 9 * d and module.proj.in_features == 3 * d
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), atol=1e-5, rtol=1e-4)


def test_timm_head_dims_shrink_every_head_consistently() -> None:
    module = _timm_attention()
    prune_attention([("attn", _timm_layout(module), 0.5)], "head_dims")
    assert (module.num_heads, module.head_dim, module.attn_dim) == (4, 4, 16)
    assert module.qkv.weight.shape == (48, 32) and module.proj.weight.shape == (32, 16)
    assert module.scale == pytest.approx(4**-0.5)
    assert module(torch.randn(1, 5, 32)).shape == (1, 5, 32)


def test_a_vit_prunes_heads_and_mlp_and_runs() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    report = modprune.prune(model, _structured(head_ratio=0.5), x)
    assert abs(report.achieved - 0.3) <= 0.01
    for block in model.blocks:
        attn = block.attn
        assert (attn.num_heads, attn.head_dim, attn.attn_dim) == (2, 16, 32)
        assert attn.qkv.out_features == 3 * attn.attn_dim == 3 * attn.proj.in_features
    assert model.eval()(x).shape == (1, 10)
    assert any(n.startswith("attention (auto)") and "4 -> 2 heads" in n for n in report.notes)


def test_attention_protect_leaves_timm_attention_as_it_is() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4, num_classes=10)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if ".attn." in n}
    modprune.prune(model, _structured(attention="protect"), torch.randn(1, 3, 32, 32))
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], t) for n, t in before.items())
    assert model.blocks[0].attn.num_heads == 4


# --- ultralytics -----------------------------------------------------------------------------


@pytest.fixture()
def ultralytics_blocks(offline_ultralytics):
    from ultralytics.nn.modules.block import A2C2f, C2PSA
    from ultralytics.nn.modules.conv import Conv

    return A2C2f, C2PSA, Conv


def _bn_eval(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def test_aattn_head_removal_equals_zeroing_that_head(offline_ultralytics) -> None:
    from ultralytics.nn.modules.block import AAttn

    from modprune.integrations.ultralytics.heads import attention_heads

    torch.manual_seed(0)
    module = _bn_eval(AAttn(64, num_heads=2, area=1))
    with torch.no_grad():
        module.qkv.conv.weight[96:] *= 1e-3  # head 1 (channels 96..191) the weakest
    reference = copy.deepcopy(module)
    with torch.no_grad():
        reference.proj.conv.weight[:, 32:] = 0
    (layout,) = attention_heads(nn.Sequential(module))
    assert prune_attention([("attn", layout, 0.5)], "auto") == ["attn (AAttn): 2 -> 1 heads"]
    assert (module.num_heads, module.head_dim, module.all_head_dim) == (1, 32, 32)
    assert module.qkv.conv.out_channels == 96 and module.pe.conv.groups == 32 == module.proj.conv.in_channels
    x = torch.randn(1, 64, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), atol=1e-5, rtol=1e-4)


def test_psa_attention_drops_query_key_dims_only(offline_ultralytics) -> None:
    from ultralytics.nn.modules.block import Attention

    from modprune.integrations.ultralytics.heads import attention_heads

    torch.manual_seed(0)
    module = _bn_eval(Attention(64, num_heads=1, attn_ratio=0.5))  # q, k: 32 dims, v: 64
    with torch.no_grad():
        module.qkv.conv.weight[:16] *= 1e-3  # query dims 0..15 and key dims 0..15 the weakest
        module.qkv.conv.weight[32:48] *= 1e-3
    reference = copy.deepcopy(module)
    with torch.no_grad():  # a query dim that is always 0 contributes nothing to the scores
        reference.qkv.bn.weight[:16] = 0
        reference.qkv.bn.bias[:16] = 0
    (layout,) = attention_heads(nn.Sequential(module))
    prune_attention([("attn", layout, 0.5)], "heads")  # whole heads impossible: left alone
    assert module.key_dim == 32
    prune_attention([("attn", layout, 0.5)], "auto")
    assert (module.num_heads, module.key_dim, module.head_dim) == (1, 16, 64)
    assert module.qkv.conv.out_channels == 96
    x = torch.randn(1, 64, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), atol=1e-5, rtol=1e-4)


def test_yolo_style_blocks_prune_heads_end_to_end(ultralytics_blocks) -> None:
    A2C2f, C2PSA, Conv = ultralytics_blocks
    torch.manual_seed(0)
    model = nn.Sequential(Conv(3, 128, 3, 2), C2PSA(128, 128), A2C2f(128, 128, n=1, a2=True, area=1), Conv(128, 8, 1))
    x = torch.randn(1, 3, 32, 32)
    shape = model.eval()(x).shape
    report = modprune.prune(model, _structured(head_ratio=0.5), x)
    assert abs(report.achieved - 0.3) <= 0.01
    attn = model[1].m[0].attn
    assert attn.key_dim == 16 and attn.qkv.conv.out_channels == 64 + 2 * 16
    aattn = model[2].m[0][0].attn
    assert (aattn.num_heads, aattn.all_head_dim) == (1, aattn.head_dim)
    assert aattn.qkv.conv.out_channels == 3 * aattn.all_head_dim == 3 * aattn.proj.conv.in_channels
    out = model.eval()(x)
    assert out.shape == shape and torch.isfinite(out).all()


# --- options and the trace budget ------------------------------------------------------------


@pytest.mark.parametrize("options", [{"attention": "all"}, {"head_ratio": 1.0}, {"head_ratio": True},
                                     {"trace_budget": 0}, {"trace_budget": "fast"}])
def test_bad_attention_options_are_config_errors(options) -> None:
    with pytest.raises(modprune.ConfigError):
        StructuredOptions(**options)


class _Slow(nn.Module):
    """A block whose forward takes a while before its convolution runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.delay = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.conv(x)


def test_the_trace_budget_stops_tracing_and_names_the_block() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Slow(), nn.Conv2d(8, 4, 1))
    model[1].delay = 0.2  # a slow block: the trace passes the 0.05 s budget inside it
    config = modprune.PruneConfig(method="structured", target=0.3, target_kind="channels",
                                  pruner_options={"trace_budget": 0.05})
    with pytest.raises(modprune.TraceTimeoutError) as caught:
        modprune.prune(model, config, torch.randn(1, 3, 8, 8))
    message = str(caught.value)
    assert "1.conv (Conv2d)" in message and "protect_modules: ['1']" in message and "trace_budget" in message
    assert caught.value.obj == "1"
    model[1].delay = 0.0  # the same model within a budget it can meet prunes
    config = modprune.PruneConfig.from_dict({**config.to_dict(), "pruner_options": {"trace_budget": 60}})
    report = modprune.prune(model, config, torch.randn(1, 3, 8, 8))
    assert report.achieved > 0


def test_a_pruned_vit_saves_and_loads_without_trust_pickle(tmp_path) -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    modprune.prune(model, _structured(head_ratio=0.5), x)
    modprune.save(model, tmp_path / "vit.pt")
    loaded = modprune.load(tmp_path / "vit.pt").eval()
    assert loaded.blocks[0].attn.num_heads == 2 and loaded.patch_embed.output_fmt is model.patch_embed.output_fmt
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


class _Colour(__import__("enum").Enum):
    RED = "qqred"


def test_the_restricted_unpickler_looks_up_allowlisted_enum_members_only() -> None:
    import io
    import pickle

    from modprune.safe_pickle import UnsafePickleError, pickle_module_for

    def load(data: bytes, classes: list[type]):
        return pickle_module_for(classes).Unpickler(io.BytesIO(data)).load()

    data = pickle.dumps(_Colour.RED, protocol=2)
    assert load(data, [_Colour]) is _Colour.RED
    with pytest.raises(UnsafePickleError):
        load(data, [])  # not allowlisted
    with pytest.raises(UnsafePickleError, match="unknown member"):
        load(data.replace(b"qqred", b"qqtan"), [_Colour])
