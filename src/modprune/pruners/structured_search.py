"""Finding the channel-ratio scale that reaches a MACs or parameter target, cheaply.

A trial does not prune anything: :meth:`GraphPruner.plan` says which channels a scale would remove,
and the MACs and parameters left are computed from per-layer counts taken once per step:

* MACs: :func:`macs_table` attributes the MACs of one forward pass to layers (convolutions, linear
  layers, and layers a plugin registered a layer pruner for). A layer that loses ``r_out`` of its
  ``o`` outputs and ``r_in`` of its ``i`` inputs keeps ``(1 - r_out/o)(1 - r_in/i)`` of its MACs
  (depthwise: ``1 - r/o``); MACs outside such layers (e.g. attention matmuls) are kept constant.
* parameters: each tensor of a touched layer scales the same way (1-D tensors by the output side),
  a bare parameter by the share of its channel dimension left.

The estimate is exact for convolutions and linear layers; the pruner measures the real result after
pruning and corrects it (see :mod:`modprune.pruners.structured`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modprune.measure.layers import macs_of_call
from modprune.measure.walk import call_model
from modprune.pruners.structured_graph import Plan

__all__ = ["Estimator", "MacsTable", "SearchResult", "macs_table", "param_owners", "search_scale"]

log = logging.getLogger(__name__)

_MAC_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)

#: ``channels(module) -> (outputs, inputs)``, 0 where unknown.
ChannelsFn = Callable[[Any], tuple[int, int]]


@dataclass
class MacsTable:
    """MACs of one forward pass: the total, and the share of each layer."""

    total: int
    layers: dict[nn.Module, int]

    @property
    def other(self) -> int:
        """MACs outside the layers (functional matmuls, ...)."""
        return max(0, self.total - sum(self.layers.values()))


def _eval_no_grad(model: nn.Module, run: Callable[[], Any]) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run()
    finally:
        model.train(was_training)


def macs_table(model: nn.Module, example_inputs: Any, custom_types: tuple[type, ...] = (), *, hooks: bool = False) -> MacsTable:
    """MACs of one forward pass attributed to layers (eval mode, no grad; the mode is restored).

    :param custom_types: layer types a plugin prunes as a whole: their MACs are theirs.
    :param hooks: count only convolution / linear layers with forward hooks (fast; exact when the
        model has no other MACs). Otherwise :class:`~torch.utils.flop_counter.FlopCounterMode`
        counts everything, the same way :func:`modprune.measure.count_macs` does.
    """
    if hooks:
        counts: dict[nn.Module, int] = {}

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            counts[module] = counts.get(module, 0) + macs_of_call(module, inputs, output)

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _MAC_LAYERS)]
        try:
            _eval_no_grad(model, lambda: call_model(model, example_inputs))
        finally:
            for h in handles:
                h.remove()
        return MacsTable(sum(counts.values()), counts)
    counter = FlopCounterMode(display=False)

    def run() -> None:
        with counter:
            call_model(model, example_inputs)

    _eval_no_grad(model, run)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    layers: dict[nn.Module, int] = {}
    inside_custom: set[str] = set()
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside_custom):
            continue
        if isinstance(module, custom_types) or (isinstance(module, _MAC_LAYERS) and not isinstance(module, custom_types)):
            key = f"{root}.{name}" if name else root
            layers[module] = sum(flops.get(key, {}).values()) // 2
            if isinstance(module, custom_types):
                inside_custom.add(f"{name}.")
    return MacsTable(int(counter.get_total_flops()) // 2, layers)


def _is_depthwise(module: Any) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


def _kept(total: int, removed: int) -> float:
    return 1.0 if total <= 0 else max(0.0, (total - removed) / total)


def _layer_factor(module: Any, plan: Plan, channels: ChannelsFn) -> float:
    """Fraction of a layer's MACs (and of its weight) a plan keeps."""
    r_out, r_in = plan.removed(module)
    if not r_out and not r_in:
        return 1.0
    out_ch, in_ch = channels(module)
    if _is_depthwise(module) or isinstance(module, _NORMS):
        return _kept(out_ch, max(r_out, r_in))
    return _kept(out_ch, r_out) * _kept(in_ch, r_in)


def param_owners(model: nn.Module) -> dict[int, nn.Module]:
    """``id(parameter) -> module`` holding it directly."""
    return {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}


@dataclass
class Estimator:
    """Estimates MACs or parameters after a plan, from counts taken before the step.

    :param channels: ``(outputs, inputs)`` of a layer (the dependency graph knows every rule's).
    :param bare_dims: channel dimension of each bare parameter torch-pruning may prune.
    """

    kind: str
    channels: ChannelsFn
    counts: dict[Any, int] = field(default_factory=dict)
    other: int = 0
    owners: dict[int, nn.Module] = field(default_factory=dict)
    bare_dims: dict[int, int] = field(default_factory=dict)

    @classmethod
    def for_macs(cls, table: MacsTable, channels: ChannelsFn) -> Estimator:
        """From a :func:`macs_table` of the model now."""
        return cls("macs", channels, dict(table.layers), table.other)

    @classmethod
    def for_params(cls, model: nn.Module, channels: ChannelsFn, bare_dims: dict[int, int]) -> Estimator:
        """From the parameters of ``model`` now (shared ones counted once)."""
        counts: dict[Any, int] = {}
        for param in model.parameters():
            counts.setdefault(param, param.numel())
        return cls("params", channels, counts, 0, param_owners(model), dict(bare_dims))

    def estimate(self, plan: Plan) -> float:
        """The metric after ``plan``."""
        if self.kind == "macs":
            return self.other + sum(n * _layer_factor(m, plan, self.channels) for m, n in self.counts.items())
        return sum(n * self._param_factor(p, plan) for p, n in self.counts.items())

    def _param_factor(self, param: nn.Parameter, plan: Plan) -> float:
        if param in plan.out or param in plan.inp:  # a bare parameter, pruned along its channel dim
            dim = self.bare_dims.get(id(param), param.ndim - 1)
            return _kept(param.shape[dim] if param.ndim else 1, max(plan.removed(param)))
        owner = self.owners.get(id(param))
        if owner is None:
            return 1.0
        r_out, r_in = plan.removed(owner)
        if not r_out and not r_in:
            return 1.0
        if param.ndim <= 1:
            out_ch, _ = self.channels(owner)
            return _kept(out_ch, max(r_out, r_in)) if out_ch else 1.0
        return _layer_factor(owner, plan, self.channels)


@dataclass
class SearchResult:
    """The scale a search settled on and what it estimated."""

    scale: float
    estimate: float
    trials: int
    history: list[tuple[float, float]] = field(default_factory=list)


def search_scale(
    evaluate: Callable[[float], float],
    goal: float,
    hi: float,
    *,
    tolerance: float,
    max_trials: int = 24,
) -> SearchResult:
    """A scale in ``[0, hi]`` whose ``evaluate(scale)`` (the fraction kept) is closest to ``goal``.

    ``evaluate`` is non-increasing in the scale (more pruning keeps less) and may move in steps
    (channels are discrete). Stops as soon as a trial lands within ``tolerance`` of ``goal``
    (Illinois false position, with a bisection every fourth trial); otherwise returns the closest
    trial, preferring one that reaches the goal on a tie. A ``goal`` below ``evaluate(hi)`` returns ``hi``.
    """
    history: list[tuple[float, float]] = []

    def f(s: float) -> float:
        value = evaluate(s)
        history.append((s, value))
        return value - goal

    def result(scale: float, gap: float) -> SearchResult:
        return SearchResult(scale, gap + goal, len(history), history)

    lo, f_lo = 0.0, 1.0 - goal  # scale 0 keeps everything
    f_hi = f(hi)
    if f_hi > 0 or abs(f_hi) <= tolerance:
        return result(hi, f_hi)
    side = 0
    for _ in range(max_trials - 1):
        if hi - lo < 1e-6 + 1e-3 * hi:  # a jump (channels, rounding units): no scale in between helps
            break
        s = (lo * f_hi - hi * f_lo) / (f_hi - f_lo) if f_hi != f_lo else (lo + hi) / 2
        if not lo < s < hi or len(history) % 4 == 3:  # guard, and guaranteed progress on plateaus
            s = (lo + hi) / 2
        fs = f(s)
        if abs(fs) <= tolerance:
            return result(s, fs)
        if fs > 0:
            lo, f_lo = s, fs
            if side == -1:
                f_hi /= 2
            side = -1
        else:
            hi, f_hi = s, fs
            if side == 1:
                f_lo /= 2
            side = 1
    scale, value = min(history, key=lambda item: (abs(item[1] - goal), item[1] > goal))
    return result(scale, value - goal)
