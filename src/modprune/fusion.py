"""The inference form of a model: every convolution + BatchNorm pair folded into one convolution.

In eval mode a BatchNorm after a convolution is an affine map per output channel,
``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so it can be folded into the convolution's weight and
bias exactly (up to float rounding). :func:`fuse` does that for every pair it knows of and replaces each
folded BatchNorm by ``nn.Identity``; the model computes the same outputs (within ~1e-5 relative) with one
op fewer per pair. Latency is measured, and models are exported, in this form.

Pairs come from three sources:

- children of an ``nn.Sequential`` (whose ``forward`` is ``nn.Sequential``'s own) that are a convolution
  directly followed by a BatchNorm of matching width: the sequence fixes the data flow;
- plugins, through the hook ``modprune_fusable_pairs(model)`` (e.g. ultralytics' ``Conv`` block, whose
  forward is ``act(bn(conv(x)))``, or a plugin block calling ``self.bn(self.conv(x))``);
- a ``torch.fx`` trace, for models it can trace (torchvision classifiers): a BatchNorm call fed only by a
  convolution call that feeds nothing else. Dynamic models (detectors) cannot be traced; the hook is the
  contract for them.

A BatchNorm is folded only if it normalises the output of exactly that convolution and nothing else; that
is what a plugin promises by returning the pair.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from modprune.exceptions import UnsupportedModelError

__all__ = ["fold_conv_bn", "fusable_pairs", "fuse", "sequential_pairs", "traced_pairs"]

LOG = logging.getLogger(__name__)

_BatchNorm = nn.modules.batchnorm._BatchNorm
_Conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_pair(conv: nn.Module, bn: nn.Module) -> None:
    """Raise UnsupportedModelError unless ``(conv, bn)`` can be folded exactly."""
    if not isinstance(conv, _Conv):
        raise UnsupportedModelError(f"cannot fold into a {type(conv).__name__}: only nn.Conv1d/2d/3d (not "
                                    "transposed) convolutions fold a following BatchNorm", conv)
    if not isinstance(bn, _BatchNorm):
        raise UnsupportedModelError(f"expected a BatchNorm after {conv}, got {type(bn).__name__}", bn)
    if bn.num_features != conv.out_channels:
        raise UnsupportedModelError(f"{bn} normalises {bn.num_features} channels but {conv} has "
                                    f"{conv.out_channels} outputs; the pair is not conv -> BN", bn)
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModelError(f"{bn} keeps no running statistics (track_running_stats=False), so it is not "
                                    "an affine map in eval mode and cannot be folded", bn)
    if parametrize.is_parametrized(conv):
        raise UnsupportedModelError(f"{conv} has a parametrized weight (a pruning mask?); bake it first with "
                                    "modprune.make_permanent (modprune.fuse does this on its copy)", conv)


@torch.no_grad()
def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` into ``conv``'s weight and bias, in place (``conv`` gains a bias if it had none).

    ``bn`` itself is left untouched: the caller removes it from the forward (see :func:`fuse`). Computed in
    float64 and stored in ``conv``'s dtype.

    :raises UnsupportedModelError: not a conv followed by a BatchNorm of the same width with running stats.
    """
    _check_pair(conv, bn)
    w = conv.weight.detach().double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale, shift = scale * bn.weight.double(), shift * bn.weight.double() + bn.bias.double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(shift)
    new_w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    new_b = bias * scale + shift
    conv.weight = nn.Parameter(new_w.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(new_b.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


def _forwards_in_order(seq: nn.Module) -> bool:
    """True when ``seq`` is an ``nn.Sequential`` whose forward is ``nn.Sequential.forward`` (not overridden)."""
    return isinstance(seq, nn.Sequential) and type(seq).forward is nn.Sequential.forward


def sequential_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """``(conv, bn)`` pairs that are adjacent children of a plain ``nn.Sequential`` in ``model``."""
    pairs = []
    for module in model.modules():
        if not _forwards_in_order(module):
            continue
        children = list(module.children())
        for a, b in zip(children, children[1:]):
            if isinstance(a, _Conv) and isinstance(b, _BatchNorm) and b.num_features == a.out_channels:
                pairs.append((a, b))
    return pairs


def traced_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """``(conv, bn)`` pairs found by tracing ``model`` with ``torch.fx``: a BatchNorm call whose only input
    is a convolution call whose only user is that BatchNorm, each module called once.

    Models ``torch.fx`` cannot trace (data-dependent control flow, as in most detectors) give ``[]``:
    their pairs come from the Sequential rule and the plugins' hook.
    """
    try:
        import torch.fx  # noqa: PLC0415

        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types on dynamic models; tracing is best effort
        LOG.debug("fuse: torch.fx cannot trace %s (%s: %s)", type(model).__name__, type(exc).__name__, exc)
        return []
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.all_input_nodes) != 1:
            continue
        src = node.all_input_nodes[0]
        if src.op != "call_module" or len(src.users) != 1 or calls[node.target] != 1 or calls[src.target] != 1:
            continue
        conv, bn = model.get_submodule(src.target), model.get_submodule(node.target)
        if isinstance(conv, _Conv) and isinstance(bn, _BatchNorm) and bn.num_features == conv.out_channels:
            pairs.append((conv, bn))
    return pairs


def fusable_pairs(model: nn.Module, pm: Any = None) -> list[tuple[nn.Module, nn.Module]]:
    """Every ``(conv, bn)`` pair of ``model`` that :func:`fuse` folds: plain-Sequential neighbours, the
    pairs plugins report through ``modprune_fusable_pairs``, and pairs a ``torch.fx`` trace shows (models
    it can trace). Each BatchNorm once, in discovery order."""
    from modprune.plugins import resolve

    found: list[tuple[nn.Module, nn.Module]] = list(sequential_pairs(model))
    for pairs in resolve(pm).hook.modprune_fusable_pairs(model=model):
        found.extend(_valid_pairs(pairs or []))
    found.extend(traced_pairs(model))
    unique: dict[int, tuple[nn.Module, nn.Module]] = {}
    for conv, bn in found:
        unique.setdefault(id(bn), (conv, bn))
    return list(unique.values())


def _valid_pairs(pairs: Iterable[Any]) -> Iterator[tuple[nn.Module, nn.Module]]:
    for pair in pairs:
        if (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], _Conv)
                and isinstance(pair[1], _BatchNorm)):
            yield pair[0], pair[1]
        else:
            LOG.warning("modprune_fusable_pairs: skipping %r (expected a (conv, BatchNorm) tuple)", pair)


def _parents(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """For every module, the ``(parent, attribute name)`` places it occupies."""
    places: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            places.setdefault(id(child), []).append((parent, name))
    return places


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy with pruning masks baked in (a parametrized model cannot be deep-copied safely)."""
    from modprune.pruners.masks import masks_baked

    if any(parametrize.is_parametrized(m) for m in model.modules()):
        with masks_baked(model):
            return copy.deepcopy(model)
    return copy.deepcopy(model)


def fuse(model: nn.Module, *, inplace: bool = False, pm: Any = None) -> nn.Module:
    """The inference form of ``model``: every known conv + BatchNorm pair folded (see the module docs).

    Args:
        model: any ``nn.Module``.
        inplace: fold into ``model`` itself (its pruning masks are made permanent first) instead of a copy.
        pm: the plugin manager whose ``modprune_fusable_pairs`` hooks are asked (default: modprune's).

    Returns:
        The fused model, in eval mode: a copy (default; ``model`` is unchanged) or ``model`` itself. Its
        outputs equal the eval-mode outputs of ``model`` up to float rounding. Do not train it: the
        BatchNorms are gone (fine-tune the unfused model, then fuse again).

    Raises:
        UnsupportedModelError: a plugin reported a pair that cannot be folded.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"fuse() needs a torch.nn.Module, got {type(model).__name__}", model)
    if inplace:
        from modprune.pruners.masks import make_permanent

        target = make_permanent(model)
    else:
        target = _copy(model)
    target.eval()
    places = _parents(target)
    folded = 0
    for conv, bn in fusable_pairs(target, pm):
        where = places.get(id(bn), [])
        if len(where) != 1:
            LOG.warning("not folding %s: it sits at %d places in the model (shared or detached)", bn, len(where))
            continue
        fold_conv_bn(conv, bn)
        parent, name = where[0]
        setattr(parent, name, nn.Identity())
        folded += 1
    LOG.info("fused %d conv+BatchNorm pairs of %s", folded, type(model).__name__)
    return target
