"""Attention pruned by whole heads or by head dimensions (before channel pruning).

An attention module reshapes its ``qkv`` projection's output channels into ``(heads, dims)`` using
sizes it stores as plain numbers, so channel pruning must either leave it alone or break it. Plugins
describe each attention module they know through the ``modprune_attention_heads`` hook, as a
:class:`HeadLayout`: where each head's query, key and value channels sit in the ``qkv`` layer's
outputs, which layers read the value channels, and a callback that stores the new sizes.
:func:`prune_attention` then

* ``heads``: removes the least important whole heads (L1 norm of the head's ``qkv`` rows and of the
  ``proj`` columns reading its values), ``floor(ratio * num_heads)`` of them, keeping at least one;
* ``head_dims``: removes ``floor(ratio * dims)`` query/key dimensions (the same positions from the
  query and the key of a head) and value dimensions from every head, ranked within each head;
* ``auto``: ``heads`` where the ratio removes at least one whole head, else ``head_dims``.

Only the layers inside the module change: its input and output widths stay, so the rest of the
model (and the channel pruning that follows) is unaffected. The attention scale a module stores is
left as it was (so the kept dimensions' scores do not change) unless its ``update`` sets another.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["ATTENTION_MODES", "HeadLayout", "prune_attention"]

log = logging.getLogger(__name__)

#: ``pruner_options.attention`` values of the structured pruner.
ATTENTION_MODES = ("auto", "heads", "head_dims", "protect")


@dataclass(frozen=True)
class HeadLayout:
    """How one attention module's channels form heads.

    :param module: the attention module (reported, and matched against protected modules).
    :param num_heads: heads now; ``qk_dim`` / ``v_dim``: query (= key) and value dimensions per head.
    :param qkv: the ``nn.Conv2d`` / ``nn.Linear`` whose outputs hold every head's query, key and value.
    :param order: ``per_head``: output channels run head by head, ``[q, k, v]`` inside each head
        (ultralytics); ``qkv``: all queries, then all keys, then all values, head by head in each
        (timm, ``nn.MultiheadAttention``).
    :param qkv_norm: a BatchNorm over ``qkv``'s outputs, sliced with it.
    :param v_depthwise: ``(depthwise conv, norm or None)`` pairs over the value channels (a positional
        encoding on ``v``).
    :param v_readers: ``nn.Conv2d`` / ``nn.Linear`` layers whose inputs are the value channels, head by
        head (the output projection).
    :param update: called with ``(num_heads, qk_dim, v_dim)`` after slicing; stores them on the module.
    :param modes: what the module supports: ``heads``, ``qk_dims``, ``v_dims``.
    :param tied_dims: query/key and value dimensions must stay equal (one reshape splits all three).
    """

    module: nn.Module
    num_heads: int
    qk_dim: int
    v_dim: int
    qkv: nn.Module
    update: Callable[[int, int, int], None]
    order: str = "per_head"
    qkv_norm: nn.Module | None = None
    v_depthwise: Sequence[tuple[nn.Module, nn.Module | None]] = ()
    v_readers: Sequence[nn.Module] = ()
    modes: frozenset[str] = field(default_factory=lambda: frozenset({"heads", "qk_dims", "v_dims"}))
    tied_dims: bool = False

    def qkv_channels(self, head: int, part: str) -> list[int]:
        """Output channels of ``qkv`` holding ``part`` (``q``, ``k`` or ``v``) of ``head``."""
        qk, v, heads = self.qk_dim, self.v_dim, self.num_heads
        if self.order == "per_head":
            start = head * (2 * qk + v) + {"q": 0, "k": qk, "v": 2 * qk}[part]
        else:
            start = {"q": head * qk, "k": heads * qk + head * qk, "v": 2 * heads * qk + head * v}[part]
        return list(range(start, start + (v if part == "v" else qk)))

    def value_channels(self, head: int) -> list[int]:
        """Value channels of ``head`` as the readers and depthwise layers see them."""
        return list(range(head * self.v_dim, (head + 1) * self.v_dim))

    def problem(self) -> str | None:
        """Why the layers do not match the stored sizes (None when they do)."""
        expected = self.num_heads * (2 * self.qk_dim + self.v_dim)
        if _out_width(self.qkv) != expected:
            return f"qkv has {_out_width(self.qkv)} outputs, heads need {expected}"
        values = self.num_heads * self.v_dim
        for layer in self.v_readers:
            if _in_width(layer) != values:
                return f"{type(layer).__name__} reads {_in_width(layer)} channels, the values are {values}"
        for conv, _ in self.v_depthwise:
            if _out_width(conv) != values or getattr(conv, "groups", values) != values:
                return f"depthwise {type(conv).__name__} does not match the {values} value channels"
        if self.tied_dims and self.qk_dim != self.v_dim:
            return "tied query/key and value dimensions differ"
        return None


# --- slicing ---------------------------------------------------------------------------------


def _out_width(layer: nn.Module) -> int:
    return int(layer.weight.shape[0])


def _in_width(layer: nn.Module) -> int:
    return int(layer.weight.shape[1])


def _param(old: torch.Tensor, new: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(new.detach().clone().contiguous(), requires_grad=old.requires_grad)


def _slice_outputs(layer: nn.Module, keep: torch.Tensor) -> None:
    """Keep output channels ``keep`` of a conv / linear (and its bias)."""
    layer.weight = _param(layer.weight, layer.weight.data[keep])
    if getattr(layer, "bias", None) is not None:
        layer.bias = _param(layer.bias, layer.bias.data[keep])
    attr = "out_features" if isinstance(layer, nn.Linear) else "out_channels"
    setattr(layer, attr, len(keep))


def _slice_inputs(layer: nn.Module, keep: torch.Tensor) -> None:
    """Keep input channels ``keep`` of a conv / linear with one group."""
    layer.weight = _param(layer.weight, layer.weight.data[:, keep])
    attr = "in_features" if isinstance(layer, nn.Linear) else "in_channels"
    setattr(layer, attr, len(keep))


def _slice_norm(norm: nn.Module | None, keep: torch.Tensor) -> None:
    """Keep channels ``keep`` of a BatchNorm (affine parameters and running statistics)."""
    if norm is None:
        return
    for name in ("weight", "bias"):
        value = getattr(norm, name, None)
        if isinstance(value, nn.Parameter):
            setattr(norm, name, _param(value, value.data[keep]))
    for name in ("running_mean", "running_var"):
        value = getattr(norm, name, None)
        if isinstance(value, torch.Tensor):
            setattr(norm, name, value[keep].clone())
    if hasattr(norm, "num_features"):
        norm.num_features = len(keep)


def _slice_depthwise(conv: nn.Module, keep: torch.Tensor) -> None:
    _slice_outputs(conv, keep)
    conv.in_channels = conv.groups = len(keep)


# --- ranking ---------------------------------------------------------------------------------


def _row_l1(layer: nn.Module) -> torch.Tensor:
    """L1 norm of each output channel's weights."""
    return layer.weight.detach().abs().flatten(1).sum(1).double()


def _column_l1(layer: nn.Module) -> torch.Tensor:
    """L1 norm of the weights reading each input channel."""
    return layer.weight.detach().abs().transpose(0, 1).flatten(1).sum(1).double()


def _scores(layout: HeadLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Per ``qkv`` output channel and per value channel: the L1 norm of the weights touching it."""
    rows = _row_l1(layout.qkv)
    values = torch.zeros(layout.num_heads * layout.v_dim, dtype=torch.float64, device=rows.device)
    for layer in layout.v_readers:
        values += _column_l1(layer).to(values.device)
    return rows, values


def _head_scores(layout: HeadLayout) -> torch.Tensor:
    rows, values = _scores(layout)
    return torch.tensor([
        sum(float(rows[layout.qkv_channels(h, p)].sum()) for p in "qkv") + float(values[layout.value_channels(h)].sum())
        for h in range(layout.num_heads)
    ])


# --- planning and applying -------------------------------------------------------------------


@dataclass
class _Cut:
    """What one module keeps: ``qkv`` output channels, value channels, and the new sizes."""

    qkv: list[int]
    values: list[int]
    sizes: tuple[int, int, int]
    what: str


def _cut_heads(layout: HeadLayout, ratio: float) -> _Cut | None:
    drop = min(layout.num_heads - 1, math.floor(ratio * layout.num_heads + 1e-9))
    if drop <= 0 or "heads" not in layout.modes:
        return None
    scores = _head_scores(layout)
    # stable: equal scores drop the later heads first
    order = sorted(range(layout.num_heads), key=lambda h: (float(scores[h]), -h))
    kept = sorted(order[drop:])
    qkv = sorted(c for h in kept for p in "qkv" for c in layout.qkv_channels(h, p))
    values = [c for h in kept for c in layout.value_channels(h)]
    return _Cut(qkv, values, (len(kept), layout.qk_dim, layout.v_dim), f"{layout.num_heads} -> {len(kept)} heads")


def _dims_to_drop(layout: HeadLayout, ratio: float) -> tuple[int, int]:
    qk = min(layout.qk_dim - 1, math.floor(ratio * layout.qk_dim + 1e-9)) if "qk_dims" in layout.modes else 0
    v = min(layout.v_dim - 1, math.floor(ratio * layout.v_dim + 1e-9)) if "v_dims" in layout.modes else 0
    if layout.tied_dims:
        qk = v = min(qk, v)
    return max(qk, 0), max(v, 0)


def _lowest(scores: torch.Tensor, drop: int) -> set[int]:
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), -i))
    return set(order[:drop])


def _cut_dims(layout: HeadLayout, ratio: float) -> _Cut | None:
    drop_qk, drop_v = _dims_to_drop(layout, ratio)
    if drop_qk == 0 and drop_v == 0:
        return None
    rows, values = _scores(layout)
    qkv: list[int] = []
    kept_values: list[int] = []
    for h in range(layout.num_heads):
        q, k, v = (layout.qkv_channels(h, p) for p in "qkv")
        gone_qk = _lowest(rows[q] + rows[k], drop_qk)
        qkv += [c for j, c in enumerate(q) if j not in gone_qk] + [c for j, c in enumerate(k) if j not in gone_qk]
        vc = layout.value_channels(h)
        gone_v = _lowest(rows[v] + values[vc], drop_v)
        qkv += [c for j, c in enumerate(v) if j not in gone_v]
        kept_values += [c for j, c in enumerate(vc) if j not in gone_v]
    sizes = (layout.num_heads, layout.qk_dim - drop_qk, layout.v_dim - drop_v)
    parts = [f"q/k {layout.qk_dim} -> {sizes[1]}" if drop_qk else "", f"v {layout.v_dim} -> {sizes[2]}" if drop_v else ""]
    what = f"head dims {', '.join(p for p in parts if p)} ({layout.num_heads} heads)"
    return _Cut(sorted(qkv), kept_values, sizes, what)


def _apply(layout: HeadLayout, cut: _Cut) -> None:
    device = layout.qkv.weight.device
    keep = torch.tensor(cut.qkv, dtype=torch.long, device=device)
    values = torch.tensor(cut.values, dtype=torch.long, device=device)
    with torch.no_grad():
        _slice_outputs(layout.qkv, keep)
        _slice_norm(layout.qkv_norm, keep)
        for conv, norm in layout.v_depthwise:
            _slice_depthwise(conv, values)
            _slice_norm(norm, values)
        for layer in layout.v_readers:
            _slice_inputs(layer, values)
    layout.update(*cut.sizes)


def prune_attention(layouts: Sequence[tuple[str, HeadLayout, float]], mode: str) -> list[str]:
    """Prune every layout's heads (``mode`` ``heads`` / ``head_dims`` / ``auto``) at its ratio.

    :param layouts: ``(qualified name, layout, ratio)``; a layout whose layers do not match its sizes is
        left alone (named in the result).
    :return: one line per module: what was removed, or why nothing was.
    """
    lines: list[str] = []
    for name, layout, ratio in layouts:
        label = f"{name} ({type(layout.module).__name__})"
        problem = layout.problem()
        if problem is not None:
            lines.append(f"{label}: left alone ({problem})")
            continue
        cut = None
        if mode in ("heads", "auto"):
            cut = _cut_heads(layout, ratio)
        if cut is None and mode in ("head_dims", "auto"):
            cut = _cut_dims(layout, ratio)
        if cut is None:
            lines.append(f"{label}: nothing removed at ratio {ratio:.3f} ({layout.num_heads} heads, mode {mode})")
            continue
        _apply(layout, cut)
        lines.append(f"{label}: {cut.what}")
        log.debug("attention %s", lines[-1])
    return lines
