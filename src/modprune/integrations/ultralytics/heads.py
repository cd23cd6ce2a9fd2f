"""Head layouts of ultralytics' attention modules (``modprune_attention_heads``).

* ``AAttn`` (YOLO12's area attention, inside ``ABlock`` / ``A2C2f``): ``qkv`` outputs run head by head,
  ``[q, k, v]`` of ``head_dim`` each; ``pe`` (depthwise) and ``proj`` read the values. Whole heads and
  head dimensions can go (``num_heads``, ``head_dim`` and ``all_head_dim`` are updated; its scale is
  ``head_dim ** -0.5``, so it follows the new ``head_dim``).
* ``Attention`` (YOLO11's ``PSABlock`` / ``C2PSA``, ``PSA``): head by head ``[q, k (key_dim each), v
  (head_dim)]``. Its forward reshapes the values to the *input's* channel count, so the values (and
  with them whole heads) must stay: only query/key dimensions go (``key_dim`` is updated, the stored
  ``scale`` kept).

ultralytics is imported only when a model already holds its modules.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from modprune.pruners.heads import HeadLayout

__all__ = ["attention_heads"]


def _parts(block: Any) -> tuple[nn.Module, nn.Module | None]:
    """An ultralytics ``Conv``'s convolution and BatchNorm (None once fused)."""
    norm = getattr(block, "bn", None)
    return block.conv, norm if isinstance(norm, nn.BatchNorm2d) else None


def _aattn(module: Any) -> HeadLayout:
    def update(heads: int, qk_dim: int, _v_dim: int) -> None:
        module.num_heads, module.head_dim = heads, qk_dim
        module.all_head_dim = heads * qk_dim

    qkv, qkv_norm = _parts(module.qkv)
    return HeadLayout(
        module=module, num_heads=int(module.num_heads), qk_dim=int(module.head_dim), v_dim=int(module.head_dim),
        qkv=qkv, qkv_norm=qkv_norm, update=update, order="per_head",
        v_depthwise=(_parts(module.pe),), v_readers=(module.proj.conv,), tied_dims=True,
    )


def _attention(module: Any) -> HeadLayout:
    def update(_heads: int, qk_dim: int, _v_dim: int) -> None:
        module.key_dim = qk_dim

    qkv, qkv_norm = _parts(module.qkv)
    return HeadLayout(
        module=module, num_heads=int(module.num_heads), qk_dim=int(module.key_dim), v_dim=int(module.head_dim),
        qkv=qkv, qkv_norm=qkv_norm, update=update, order="per_head",
        v_depthwise=(_parts(module.pe),), v_readers=(module.proj.conv,), modes=frozenset({"qk_dims"}),
    )


def attention_heads(model: nn.Module) -> list[HeadLayout]:
    """A layout for every ultralytics ``Attention`` and ``AAttn`` in ``model``."""
    if "ultralytics" not in sys.modules:
        return []
    from ultralytics.nn.modules.block import AAttn, Attention  # noqa: PLC0415

    out: list[HeadLayout] = []
    for module in model.modules():
        if isinstance(module, AAttn):
            out.append(_aattn(module))
        elif isinstance(module, Attention):
            out.append(_attention(module))
    return out
