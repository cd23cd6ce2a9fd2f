"""The built-in timm plugin: attention detection, protection and head layouts for timm models.

Registered only when timm is installed; importing this module does not import timm, and the model
hooks do nothing until timm is in ``sys.modules`` (a model cannot hold timm modules before that).

* detectors: ``attention`` (timm ``Attention``, EfficientViT's ``CascadedGroupAttention``, block priority);
* ``modprune_protected_modules``: those attention modules keep their input and output widths (their
  channels are reshaped into heads by sizes stored as numbers; channel pruning through them broke
  MobileViT's forward and made the graph of EfficientViT's cascaded heads grow for minutes);
* ``modprune_attention_heads``: timm ``Attention`` (ViT, DeiT, MobileViT, ...) pruned by whole heads or
  head dimensions inside (``num_heads``, ``head_dim``, ``attn_dim`` and ``scale`` updated); modules
  with query/key or output normalisation or a gate are left as they are;
* ``modprune_register_safe_globals``: timm's ``Format`` enum (loaded as an existing member by value);
* ``modprune_unwrapped_parameters``: a ``VisionTransformer``'s ``pos_embed`` (tokens x channels),
  channels on its last dimension.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from torch import nn

from modprune.detectors.base import BLOCK_PRIORITY, Detector
from modprune.hookspecs import hookimpl
from modprune.pruners.heads import HeadLayout

__all__ = ["attention_types", "timm_attention_heads"]


@functools.lru_cache(maxsize=1)
def _types() -> dict[str, tuple[type, ...]]:
    from timm.layers import Attention  # noqa: PLC0415
    from timm.models import efficientvit_msra, vision_transformer  # noqa: PLC0415

    cascaded = getattr(efficientvit_msra, "CascadedGroupAttention", None)
    return {
        "heads": (Attention,),
        "attention": (Attention,) + ((cascaded,) if isinstance(cascaded, type) else ()),
        "vit": (vision_transformer.VisionTransformer,),
    }


def attention_types() -> tuple[type, ...]:
    """timm's attention classes modprune knows; () until timm is imported."""
    return _types()["attention"] if "timm" in sys.modules else ()


def _is_attention(module: nn.Module, _name: str) -> bool:
    types = attention_types()
    return bool(types) and isinstance(module, types)


@hookimpl
def modprune_register_detectors() -> list[Detector]:
    return [Detector("timm_attention", "attention", _is_attention, priority=BLOCK_PRIORITY,
                     description="timm Attention (ViT, DeiT, MobileViT), EfficientViT CascadedGroupAttention")]


@hookimpl
def modprune_protected_modules(model: nn.Module) -> list[nn.Module]:
    types = attention_types()
    return [m for m in model.modules() if isinstance(m, types)] if types else []


def _plain(module: Any) -> bool:
    """No query/key normalisation, output normalisation or gate (their sizes are not sliced)."""
    return all(isinstance(getattr(module, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm", "norm")) \
        and getattr(module, "gate", None) is None and isinstance(getattr(module, "qkv", None), nn.Linear)


def _layout(module: Any) -> HeadLayout:
    def update(heads: int, qk_dim: int, _v_dim: int) -> None:
        module.num_heads, module.head_dim = heads, qk_dim
        module.attn_dim = heads * qk_dim
        module.scale = qk_dim**-0.5  # the fused path scales by the new head_dim: keep both paths equal

    dim = int(module.head_dim)
    return HeadLayout(module=module, num_heads=int(module.num_heads), qk_dim=dim, v_dim=dim, qkv=module.qkv,
                      update=update, order="qkv", v_readers=(module.proj,), tied_dims=True)


def timm_attention_heads(model: nn.Module) -> list[HeadLayout]:
    """A layout for every plain timm ``Attention`` in ``model``."""
    if "timm" not in sys.modules:
        return []
    heads = _types()["heads"]
    return [_layout(m) for m in model.modules() if isinstance(m, heads) and _plain(m) and hasattr(m, "attn_dim")]


@hookimpl
def modprune_attention_heads(model: nn.Module) -> list[HeadLayout]:
    return timm_attention_heads(model)


@hookimpl
def modprune_register_safe_globals() -> list[type]:
    """timm's ``Format`` enum (a ``PatchEmbed`` stores one), so pruned ViTs load without trust_pickle."""
    from timm.layers.format import Format  # noqa: PLC0415

    return [Format]


@hookimpl
def modprune_unwrapped_parameters(model: nn.Module) -> list[tuple[Any, int]]:
    if "timm" not in sys.modules:
        return []
    vit = _types()["vit"]
    return [(m.pos_embed, m.pos_embed.ndim - 1) for m in model.modules()
            if isinstance(m, vit) and isinstance(getattr(m, "pos_embed", None), nn.Parameter)]
