"""torch-pruning's dependency graph and ``BasePruner``, adapted to modprune's needs.

:class:`GraphPruner` is a ``torch_pruning.pruner.BasePruner`` (its dependency graph, group building,
ranking scopes, thresholds and ``round_to``) with these additions:

* one knob, :attr:`GraphPruner.scale`: every root module's pruning ratio is
  ``min(max_ratio, scale * base_ratio)``, so a search can try many scales on one dependency graph
  (in the layer scope, each layer's ratio is offset by at most 0.1 % so that layers of equal width do
  not all drop a channel at the same scale);
* roots of plugin-registered layer types join the ranking scopes (torch-pruning scopes only its own
  layer types);
* frozen modules: a group that would touch a frozen module or parameter in any way (its outputs
  *or* its inputs) is skipped, so protected modules stay bit-identical;
* importance scores are computed once per group and step (a search reuses them), with exact ties
  broken deterministically so that ranking over several layers never removes a whole tied layer;
* no layer loses every channel (nor more than ``max_ratio`` of them, nor drops below ``round_to``),
  whatever the ranking scope: each group's best channels are kept out of reach of the ranking;
* with ``round_to`` (layer scope), each layer's kept width is its unrounded width rounded to a
  multiple of ``round_to`` with a per-layer dither (:meth:`GraphPruner.rounded_ratio`) instead of
  torch-pruning's "any removal costs a whole unit": the result then moves one layer-unit at a time
  as the scale grows, so a search can land near any target (without it the smallest step of
  yolov8n with ``round_to=16`` removes 32 % of the MACs at once).

:meth:`GraphPruner.plan` lists the groups a step at some scale would prune, without pruning (to
estimate the result; the graph's index mappings and full groups are reused between plans of one
step, see :mod:`modprune.pruners.tp_patches`), and :meth:`GraphPruner.apply` prunes a plan.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping as tp_index_mapping

from modprune.pruners.tp_patches import GroupCache, frozen_graph

__all__ = ["GraphPruner", "GroupUnit", "Plan", "splits_through_reshape", "tracing_mode"]

_FLATTEN_MAPPING = tp_index_mapping._FlattenIndexMapping

log = logging.getLogger(__name__)

#: Relative size of the tie-breaking offsets added to importance scores (in float64).
_TIE_EPS = 1e-9
#: Added to the scores of the channels a layer must keep, so that no ranking selects them.
_OUT_OF_REACH = 1e30
#: Relative spread of the per-layer ratio offsets (layer scope): layers of equal width would
#: otherwise all drop a channel at the same scale, making the result jump in coarse steps.
_RATIO_SPREAD = 1e-3
#: Low-discrepancy sequence step (golden ratio) for offsets and tie-breaking phases.
_GOLDEN = 0.6180339887498949


@dataclass
class Plan:
    """What one pruning step at ``scale`` would remove, in the numbering of the unpruned step.

    ``out`` / ``inp`` map a module (or bare parameter) to the channel indices removed from its
    outputs / inputs.
    """

    scale: float = 0.0
    out: dict[Any, set[int]] = field(default_factory=lambda: defaultdict(set))
    inp: dict[Any, set[int]] = field(default_factory=lambda: defaultdict(set))
    #: ``(root module, pruning function, root indices)`` of each group, in pruning order.
    roots: list[tuple[Any, Any, list[int]]] = field(default_factory=list)

    def removed(self, target: Any) -> tuple[int, int]:
        """``(outputs removed, inputs removed)`` of ``target``."""
        return len(self.out.get(target, ())), len(self.inp.get(target, ()))


@dataclass
class GroupUnit:
    """One dependency group a step may shrink, for allocations that choose counts per group.

    :param size: channels per channel group (the group's root channels when ``ch_groups`` is 1).
    :param scores: importance of each of those channels (averaged over channel groups), ascending.
    :param reach: ``(module, side) -> channels it loses per root channel removed`` (side ``out``/``in``).
    :param keep: channels per channel group the group keeps at least.
    """

    root: Any
    ch_groups: int
    size: int
    scores: list[float]
    reach: dict[tuple[Any, str], float]
    keep: int


@contextlib.contextmanager
def tracing_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, autograd on and every parameter requiring grad (torch-pruning traces grad_fns).

    Everything is restored afterwards: each module's train/eval mode, and ``requires_grad=False``
    on the parameters that had it (by name: pruning replaces parameter objects).
    """
    modes = {m: m.training for m in model.modules()}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    model.eval()
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for name, p in model.named_parameters():
            if name in frozen:
                p.requires_grad_(False)
        for m, training in modes.items():
            m.training = training


class _CachedImportance(tp.importance.Importance):
    """Wraps a torch-pruning importance: one computation per root module per step, ties broken,
    and each group's ``keep(group, channels)`` best channels lifted out of reach of any ranking.
    """

    def __init__(self, inner: Any, keep: Callable[[Any, int], int]) -> None:
        self.inner = inner
        self.keep = keep
        self.cache: dict[tuple[int, str, int], torch.Tensor | None] = {}

    @staticmethod
    def key(group: Any) -> tuple[int, str, int]:
        """Cache key: root module, root pruning function, number of channels."""
        dep, idxs = group[0]
        return id(dep.target.module), getattr(dep.handler, "__name__", str(dep.handler)), len(idxs)

    @torch.no_grad()
    def __call__(self, group: Any, **kwargs: Any) -> torch.Tensor | None:
        key = self.key(group)
        if key not in self.cache:
            self.cache[key] = self._score(group, **kwargs)
        return self.cache[key]

    def _score(self, group: Any, **kwargs: Any) -> torch.Tensor | None:
        imp = self.inner(group, **kwargs)
        if imp is None:
            return None
        # float64, so that offsets far below any real score difference still separate equal scores;
        # each group gets its own fractional phase, so equal scores of different groups differ too.
        imp = torch.nan_to_num(imp.detach().double(), nan=0.0)
        phase = (len(self.cache) * _GOLDEN) % 1.0
        ramp = (torch.arange(len(imp), dtype=imp.dtype, device=imp.device) + phase) / max(len(imp), 1)
        imp = imp + _TIE_EPS * (imp.abs().max() + 1e-30) * ramp
        keep = min(self.keep(group, len(imp)), len(imp))
        if keep > 0:
            imp[torch.topk(imp, keep).indices] += _OUT_OF_REACH
        return imp


def splits_through_reshape(group: Any) -> bool:
    """Whether a group maps channels through a reshape that folds several channels into one
    (e.g. ``Linear -> view -> ConvTranspose``: the linear's outputs become channels x positions).

    torch-pruning maps such indices one way (``index // positions``) and the two sides then disagree
    on how many channels went (stored sizes go negative, the reshape no longer fits): the group is
    left alone.
    """
    for dep, _ in group:
        for mapping in dep.index_mapping:
            if isinstance(mapping, _FLATTEN_MAPPING) and mapping.reverse and getattr(mapping, "_stride", 1) > 1:
                return True
    return False


def _frozen_ids(frozen: Sequence[Any]) -> set[int]:
    """Ids of the frozen objects and of every parameter and submodule of the frozen modules."""
    ids = {id(x) for x in frozen}
    for module in (f for f in frozen if isinstance(f, nn.Module)):
        ids.update(id(p) for p in module.parameters())
        ids.update(id(m) for m in module.modules())
    return ids


class GraphPruner(tp.pruner.BasePruner):
    """A ``BasePruner`` driven by :attr:`scale`, with frozen modules and per-layer caps (see module doc).

    :param base_ratios: relative ratio of each root module (a conv, linear or custom-pruned module).
    :param scopes: ranking scopes: each a tuple of root modules ranked together (one module: layer-wise).
    :param frozen: modules and bare parameters whose tensors must stay untouched.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        importance: Any,
        *,
        base_ratios: Mapping[nn.Module, float],
        scopes: Sequence[tuple[nn.Module, ...]],
        frozen: Sequence[Any],
        max_ratio: float,
        round_to: int | None,
        customized_pruners: Mapping[Any, Any],
        unwrapped_parameters: Sequence[tuple[nn.Parameter, int]],
        root_module_types: Sequence[type],
        forward_fn: Any = None,
    ) -> None:
        self.scale = 0.0
        #: Per-root ratios replacing ``scale * base`` while :meth:`plan_counts` plans.
        self._override: dict[Any, float] | None = None
        #: Roots of groups left alone because they cross a channel-splitting reshape.
        self.reshape_skipped: set[Any] = set()
        self._base = dict(base_ratios)
        self._frozen_ids = _frozen_ids(frozen)
        self._cached = _CachedImportance(importance, self._keep_for_group)
        self._ratio_cap: dict[nn.Module, float] = {}
        self._group_cache = GroupCache()  # the full groups of the unpruned step, built once (frozen_graph)
        self._scopes = [tuple(s) for s in scopes]
        self._spread = {
            scope[0]: 1 + _RATIO_SPREAD * ((i * _GOLDEN) % 1.0) for i, scope in enumerate(self._scopes) if len(scope) == 1
        }
        #: Rounding dither in (0, 1) of each layer-scope root (``round_to`` only).
        self._dither = {
            scope[0]: ((i + 1) * _GOLDEN) % 1.0 for i, scope in enumerate(self._scopes) if len(scope) == 1 and round_to
        }
        global_ranking = any(len(s) > 1 for s in scopes)
        ratio_dict: dict[Any, float] = {}
        for scope in scopes:
            ratio_dict[scope if len(scope) > 1 else scope[0]] = self._base.get(scope[0], 0.0)
        with warnings.catch_warnings():
            # modprune reports bare parameters itself (see structured.py); torch-pruning's warning is noise.
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            super().__init__(
                model,
                example_inputs,
                importance=self._cached,
                global_pruning=global_ranking,
                pruning_ratio=0.0,
                pruning_ratio_dict=ratio_dict,
                max_pruning_ratio=max_ratio,
                iterative_steps=1,
                ignored_layers=[f for f in frozen if isinstance(f, nn.Module)],
                round_to=round_to,
                customized_pruners=dict(customized_pruners),
                unwrapped_parameters=list(unwrapped_parameters),
                root_module_types=list(root_module_types),
                forward_fn=forward_fn,
            )
        self._scope_custom_roots()

    def _scope_custom_roots(self) -> None:
        """Put roots of plugin-registered layer types in their ranking scopes too.

        torch-pruning scopes only its built-in layer types from ``pruning_ratio_dict``; a custom layer
        would fall back to the fixed default ratio. It joins its scope's name (or gets its own).
        """
        for index, scope in enumerate(self._scopes):
            known = [self._layer_to_scope[m][0] for m in scope if m in self._layer_to_scope]
            for position, module in enumerate(scope):
                if module in self._layer_to_scope or module not in self.DG.module2node:
                    continue
                name = known[0] if known else f"_modprune_scope_{index}_{position if len(scope) == 1 else 0}"
                self._layer_to_scope[module] = (name, list(scope))

    # --- torch-pruning overrides ------------------------------------------------------------

    def get_target_pruning_ratio(self, module: nn.Module, step: int = -1) -> float:
        """``min(max_ratio, scale * base_ratio)`` of ``module`` (the step schedule is modprune's)."""
        if self._override is not None:
            return self._override.get(module, 0.0)
        ratio = self.scale * self._base.get(module, 0.0) * self._spread.get(module, 1.0)
        ratio = min(self.max_pruning_ratio, ratio)
        ratio = min(ratio, self._ratio_cap.get(module, ratio))
        return self.rounded_ratio(module, ratio) if module in self._dither else ratio

    def rounded_ratio(self, module: nn.Module, ratio: float) -> float:
        """The ratio that makes torch-pruning keep a multiple of ``round_to`` near ``(1 - ratio)`` of the
        layer's channels: ``round_to * floor(kept / round_to + dither)`` (unbiased over layers; each
        layer crosses to its next unit at its own scale), never below :meth:`keep_min`.

        torch-pruning keeps ``int(n * (1 - r))`` channels, then rounds that down to a multiple of
        ``round_to``; the returned ratio makes the first step land exactly on the chosen width.
        """
        try:
            channels = int(self.DG.get_out_channels(module) or 0)
        except (KeyError, AttributeError, TypeError):
            return ratio
        unit = int(self.round_to or 1)
        if ratio <= 0 or channels < unit or module in self.out_channel_groups:
            return ratio
        kept = unit * math.floor(channels * (1 - ratio) / unit + self._dither[module])
        floor = unit * math.ceil(self.keep_min(channels) / unit)
        kept = min(channels, max(kept, floor))
        return 0.0 if kept >= channels else (channels - kept - 0.5) / channels

    def _check_pruning_ratio(self, group: Any) -> bool:
        """Skip groups touching a frozen module or parameter, or splitting channels into positions
        through a reshape (see :func:`splits_through_reshape`), then torch-pruning's own checks."""
        for dep, _ in group:
            if id(dep.target.module) in self._frozen_ids:
                return False
        if splits_through_reshape(group):
            self.reshape_skipped.add(group[0].dep.target.module)
            return False
        return bool(super()._check_pruning_ratio(group))

    # --- modprune API -------------------------------------------------------------------------

    @property
    def frozen_ids(self) -> set[int]:
        """ids of the frozen modules, their submodules and parameters (groups touching one are skipped)."""
        return set(self._frozen_ids)

    def keep_min(self, channels: int) -> int:
        """Channels a layer of ``channels`` keeps at least: one, ``(1 - max_ratio)`` of them, ``round_to``."""
        keep = max(1, math.ceil(channels * (1 - self.max_pruning_ratio) - 1e-9))
        if self.round_to and channels >= self.round_to:
            keep = max(keep, self.round_to)
        return min(keep, channels)

    def _keep_for_group(self, group: Any, channels: int) -> int:
        root = group[0].dep.target.module
        if root in self.out_channel_groups or root in self.in_channel_groups:
            return 0  # grouped channels: scores are averaged over groups later; leave them alone
        return self.keep_min(channels)

    def new_step(self) -> None:
        """Start a step: forget cached scores, groups and channel baselines, then score every group
        and cap each scope's ratio so that each layer keeps :meth:`keep_min` channels (torch-pruning
        drops a group that would lose all its channels, so a ratio near 1 would prune nothing).
        """
        self._cached.cache.clear()
        self._group_cache.clear()
        self._scope_initial_channels = {}
        self.reset()
        tp_index_mapping.update_index_mapping(self.DG)
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        with frozen_graph(self.DG, self._group_cache):  # only planning: the graph does not change
            for group in self.DG.get_all_groups(ignored_layers=self.ignored_layers, root_module_types=self.root_module_types):
                root = group[0].dep.target.module
                if root not in self._layer_to_scope or not self._check_pruning_ratio(group):
                    continue
                imp = self.estimate_importance(group)
                if imp is None:
                    continue
                # grouped channels (a GroupNorm or grouped conv in the group): each group keeps its own
                channels = len(imp) // max(1, self._get_channel_groups(group), self.out_channel_groups.get(root, 1))
                total = totals[self._layer_to_scope[root][0]]
                total[0] += channels
                total[1] += self._keep_for_group(group, channels)
        self._ratio_cap = {
            module: max(0.0, 1 - (totals[name][1] + 0.5) / totals[name][0]) if totals[name][0] else 0.0
            for module, (name, _) in self._layer_to_scope.items()
        }

    def plan(self, scale: float) -> Plan:
        """What one step at ``scale`` would remove (nothing is changed)."""
        self.scale = scale
        self._scope_initial_channels = {}
        self.current_step = 0
        plan = Plan(scale=scale)
        with frozen_graph(self.DG, self._group_cache):
            for group in self.step(interactive=True) or ():
                root, root_idxs = group[0]
                plan.roots.append((root.target.module, root.handler, [int(i) for i in root_idxs]))
                for dep, idxs in group:
                    side = plan.out if self.DG.is_out_channel_pruning_fn(dep.handler) else plan.inp
                    side[dep.target.module].update(int(i) for i in idxs)
        return plan

    def units(self) -> list[GroupUnit]:
        """The groups of this step (after :meth:`new_step`) that a ranking may shrink, with their scores
        and the layers each reaches (nothing is changed)."""
        units = []
        with frozen_graph(self.DG, self._group_cache):
            for group in self.DG.get_all_groups(ignored_layers=self.ignored_layers, root_module_types=self.root_module_types):
                root = group[0].dep.target.module
                if root not in self._layer_to_scope or not self._check_pruning_ratio(group):
                    continue
                imp = self.estimate_importance(group)
                if imp is None or len(imp) == 0:
                    continue
                ch_groups = max(1, self._get_channel_groups(group))
                size = len(imp) // ch_groups
                dim_imp = imp.view(ch_groups, -1).mean(dim=0) if ch_groups > 1 else imp
                reached: dict[tuple[Any, str], set[int]] = defaultdict(set)
                for dep, idxs in group:
                    side = "out" if self.DG.is_out_channel_pruning_fn(dep.handler) else "in"
                    reached[(dep.target.module, side)].update(int(i) for i in idxs)
                reach = {k: len(v) / len(imp) for k, v in reached.items()}
                keep = self.keep_min(size)
                units.append(GroupUnit(root, ch_groups, size, sorted(float(v) for v in dim_imp), reach, keep))
        return units

    def plan_counts(self, counts: Mapping[Any, int], sizes: Mapping[Any, int]) -> Plan:
        """What a step removing ``counts[root]`` of the ``sizes[root]`` channels of each channel group of
        each root would remove, the least important first (each root ranked alone)."""
        self._override = {root: (k - 0.5) / sizes[root] for root, k in counts.items() if k > 0}
        try:
            return self.plan(0.0)
        finally:
            self._override = None

    def apply(self, plan: Plan) -> int:
        """Prune ``plan``'s groups in place (planned on the unpruned step); returns how many were pruned.

        Each group is rebuilt just before it is pruned, so that torch-pruning maps its indices through
        concatenations and splits whose sizes the previous groups changed (as its own step does).
        """
        for module, handler, idxs in plan.roots:
            self.DG.get_pruning_group(module, handler, idxs).prune()
        self._group_cache.clear()
        return len(plan.roots)
