"""What structured pruning may touch: frozen modules, root layers and their ratios, bare parameters.

These helpers turn modprune's categories, config and plugin hooks into torch-pruning's vocabulary
(``ignored_layers``, ``pruning_ratio_dict`` scopes, ``unwrapped_parameters``, ``customized_pruners``)
and check what torch-pruning's graph found (bare parameters, layers feeding the model's outputs).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Iterator

import torch
import torch_pruning as tp
from torch import nn

from modprune.config import PruneConfig
from modprune.exceptions import ConfigError, UnsupportedModelError
from modprune.measure.walk import tensors_of
from modprune.pruners.base import PruneContext

__all__ = [
    "Protection",
    "Roots",
    "bare_parameter_notes",
    "describe",
    "detached",
    "find_protection",
    "find_roots",
    "module_stack",
    "output_layers",
    "protected_subtrees",
    "sync_stored_sizes",
    "type_changes",
    "unsupported_from",
]

log = logging.getLogger(__name__)

#: Layer types that set a tensor's channel count (traversal from outputs stops at them).
_CHANNEL_SETTERS = (
    tp.ops.OPTYPE.CONV,
    tp.ops.OPTYPE.LINEAR,
    tp.ops.OPTYPE.LSTM,
    tp.ops.OPTYPE.EMBED,
    tp.ops.OPTYPE.MHA,
    tp.ops.OPTYPE.CUSTOMIZED,
    tp.ops.OPTYPE.PARAMETER,
)
#: How many names a note lists before summarising.
_NOTE_NAMES = 6


def describe(name: str, module: Any) -> str:
    """``qualified.name (Type)``, the way every message names a module."""
    return f"{name or '<root>'} ({type(module).__name__})"


def _short_list(items: list[str]) -> str:
    shown = ", ".join(items[:_NOTE_NAMES])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _NOTE_NAMES else "")


@dataclass
class Protection:
    """Modules and parameters structured pruning must leave bit-identical, and why."""

    frozen: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: ``(name, module)`` of the subtrees ``config.protect_modules`` names.
    subtrees: list[tuple[str, nn.Module]] = field(default_factory=list)


def find_protection(model: nn.Module, config: PruneConfig, ctx: PruneContext) -> Protection:
    """Frozen modules: those owning parameters of protected categories, plus plugin-protected ones."""
    out = Protection()
    seen: set[int] = set()
    _protect_categories(model, config, ctx, out, seen)
    _protect_plugin_modules(model, ctx, out, seen)
    out.subtrees = protected_subtrees(model, config)
    listed = [describe(n, m) for n, m in out.subtrees]
    for _, module in out.subtrees:
        if id(module) not in seen:
            seen.add(id(module))
            out.frozen.append(module)
    if listed:
        out.notes.append(f"protected modules (protect_modules): {len(listed)} left untouched ({_short_list(listed)})")
    return out


def protected_subtrees(model: nn.Module, config: PruneConfig) -> list[tuple[str, nn.Module]]:
    """The outermost modules ``config.protect_modules`` names (their children are protected with them).

    :raises ConfigError: a name or pattern matches no module of ``model``.
    """
    if not config.protect_modules:
        return []
    names = [n for n, _ in model.named_modules() if n]
    unmatched = [p for p in config.protect_modules if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise ConfigError(
            f"protect_modules {unmatched} match no module of {type(model).__name__}; qualified names look like "
            f"{', '.join(names[:4])} (see `modprune inspect`)",
            unmatched,
        )
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if name and config.protects_module(name) and not any(name.startswith(f"{n}.") for n, _ in found):
            found.append((name, module))
    return found


@contextlib.contextmanager
def detached(subtrees: list[tuple[str, nn.Module]], inputs: list[Any]) -> Iterator[None]:
    """Run protected subtrees without autograd while tracing, collecting the tensors they receive.

    torch-pruning then does not trace through them (a detector's heads can hold most of the graph);
    the layers producing their inputs keep their widths (see :func:`output_layers`).
    """
    originals = []
    for _, module in subtrees:
        original = module.forward

        def forward(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            inputs.extend(tensors_of((args, kwargs)))
            with torch.no_grad():
                return _original(*args, **kwargs)

        module.forward = forward  # type: ignore[method-assign]
        originals.append(module)
    try:
        yield
    finally:
        for module in originals:
            del module.forward


def _protect_categories(model: nn.Module, config: PruneConfig, ctx: PruneContext, out: Protection, seen: set[int]) -> None:
    """Freeze the owners of every parameter in a protected category.

    A parameter held by a container (not a leaf layer) is frozen on its own, so that protecting it
    does not freeze the container's children.
    """
    modules = dict(model.named_modules())
    by_category: dict[str, list[str]] = defaultdict(list)
    for pname, param in model.named_parameters():
        category = ctx.categories.params.get(pname)
        if category not in config.protect:
            continue
        owner_name = pname.rpartition(".")[0]
        owner = modules[owner_name]
        target: Any = owner if not any(True for _ in owner.children()) else param
        if id(target) not in seen:
            seen.add(id(target))
            out.frozen.append(target)
            by_category[category].append(describe(owner_name, owner) if target is owner else f"{pname} (parameter)")
    for category, items in sorted(by_category.items()):
        out.notes.append(f"protected category {category!r}: {len(items)} modules left untouched ({_short_list(items)})")


def _protect_plugin_modules(model: nn.Module, ctx: PruneContext, out: Protection, seen: set[int]) -> None:
    """Freeze the modules plugins return from ``modprune_protected_modules`` (with everything inside)."""
    names = {id(m): n for n, m in model.named_modules()}
    by_category: dict[str, list[str]] = defaultdict(list)
    for module in ctx.protected_modules(model):
        if not isinstance(module, nn.Module) or id(module) not in names or id(module) in seen:
            continue
        seen.add(id(module))
        out.frozen.append(module)
        name = names[id(module)]
        by_category[ctx.categories.modules.get(name, "other")].append(describe(name, module))
    for category, items in sorted(by_category.items()):
        if category == "attention":
            out.notes.append(
                f"attention protected by plugins (modprune_protected_modules): {len(items)} modules keep their input "
                "and output widths, with the channels they share; inside, heads are pruned where a plugin describes "
                f"them (pruner_options attention) ({_short_list(items)})"
            )
            continue
        out.notes.append(
            f"protected by plugins, category {category!r} (modprune_protected_modules): {len(items)} modules left "
            f"untouched, with the channels they share ({_short_list(items)})"
        )


@dataclass
class Roots:
    """Root layers (whose output channels start a pruning group), their ratios and ranking scopes."""

    base: dict[nn.Module, float] = field(default_factory=dict)
    category: dict[nn.Module, str] = field(default_factory=dict)
    scopes: list[tuple[nn.Module, ...]] = field(default_factory=list)
    types: tuple[type, ...] = ()

    def category_ratios(self, scale: float, cap: float) -> dict[str, float]:
        """Effective channel ratio per category at ``scale``."""
        out: dict[str, float] = {}
        for module, base in self.base.items():
            out[self.category[module]] = round(min(cap, scale * base), 4)
        return dict(sorted(out.items()))

    def max_scale(self, cap: float) -> float:
        """The scale at which every category with a positive ratio is at ``cap``."""
        positive = [b for b in self.base.values() if b > 0]
        return cap / min(positive) if positive else 0.0


def find_roots(model: nn.Module, config: PruneConfig, ctx: PruneContext, frozen: list[Any]) -> Roots:
    """Root layers by category, with ``config.ratio_for(category)`` as base ratio, grouped by scope.

    ``layer``: each layer ranks its own channels; ``category``: one ranking per category;
    ``global``: one ranking over every category sharing the same ratio (all of them by default).
    """
    frozen_ids = {id(m) for f in frozen if isinstance(f, nn.Module) for m in f.modules()}
    custom = tuple(t for t in ctx.layer_pruners if isinstance(t, type))
    types = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR, tp.ops.TORCH_LSTM) + custom
    roots = Roots(types=types)
    for name, module in model.named_modules():
        if not isinstance(module, types) or id(module) in frozen_ids:
            continue
        category = ctx.categories.modules.get(name, "other")
        roots.base[module] = config.ratio_for(category)
        roots.category[module] = category
    groups: dict[Any, list[nn.Module]] = defaultdict(list)
    for module, base in roots.base.items():
        if config.scope == "layer" or base <= 0:
            roots.scopes.append((module,))
        elif config.scope == "category":
            groups[roots.category[module]].append(module)
        else:
            groups[base].append(module)
    roots.scopes.extend(tuple(ms) for ms in groups.values())
    return roots


def output_layers(pruner: Any, outputs: Any, skip: AbstractSet[int] = frozenset()) -> tuple[list[nn.Module], list[int]]:
    """Layers whose output channels reach a tensor the model returns.

    Everything a model returns keeps its shape (a classifier's classes, a head's outputs, and also
    returned tensors the model consumes itself, e.g. feature maps that are concatenated inside), except
    the tensors whose ``id`` is in ``skip`` (named by ``modprune_resizable_outputs``).

    :return: the layers, and the positions of the fixed returned tensors in :func:`tensors_of` ``(outputs)``.
    """
    by_grad_fn = {node.grad_fn: node for node in pruner.DG.module2node.values() if node.grad_fn is not None}
    found: list[nn.Module] = []
    returned: list[int] = []
    stack = []
    for i, t in enumerate(tensors_of(outputs)):
        if id(t) in skip:
            continue
        returned.append(i)
        node = by_grad_fn.get(t.grad_fn) if t.grad_fn is not None else None
        if node is not None:
            stack.append(node)
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.type in _CHANNEL_SETTERS and not _is_depthwise(node.module):
            if isinstance(node.module, nn.Module) and node.module not in found:
                found.append(node.module)
            continue
        stack.extend(node.inputs)
    return found, returned


def _stored_sizes(module: nn.Module) -> dict[str, int]:
    """The sizes a layer's weight implies for its stored size attributes (empty when unknown)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim == 0:
        return {}
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return {"in_channels": weight.shape[0], "out_channels": weight.shape[1] * module.groups}
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"out_channels": weight.shape[0], "in_channels": weight.shape[1] * module.groups}
    if isinstance(module, nn.Linear):
        return {"out_features": weight.shape[0], "in_features": weight.shape[1]}
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        return {"num_features" if hasattr(module, "num_features") else "num_channels": weight.shape[0]}
    return {}


def sync_stored_sizes(model: nn.Module) -> list[str]:
    """Set every layer's stored sizes (``in_channels``, ``out_features``, ...) from its weight.

    :return: ``name.attr old -> new`` for each size that was wrong.
    """
    fixed: list[str] = []
    for name, module in model.named_modules():
        for attr, size in _stored_sizes(module).items():
            old = getattr(module, attr, None)
            if isinstance(old, int) and old != size:
                setattr(module, attr, int(size))
                fixed.append(f"{name}.{attr} {old} -> {size}")
    return fixed


def _is_depthwise(module: Any) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


def bare_parameter_notes(
    pruner: Any, model: nn.Module, declared: set[int], frozen_ids: set[int]
) -> list[str]:
    """Check the bare parameters torch-pruning found that no plugin declared.

    A bare parameter used in forward with a single non-singleton dimension is pruned along it
    (reported in a note). One with several non-singleton dimensions is ambiguous: it raises.

    :raises UnsupportedModelError: naming the parameter and its module, saying what to register.
    """
    names = dict((id(p), n) for n, p in model.named_parameters())
    modules = dict(model.named_modules())
    handled: list[str] = []
    for item in pruner.DG.unwrapped_parameters:
        param, dim = item[0], item[1]  # torch-pruning's UnwrappedParameters, or a declared (param, dim) pair
        if id(param) in declared or id(param) in frozen_ids or param not in pruner.DG.module2node:
            continue
        pname = names.get(id(param), "?")
        owner_name = pname.rpartition(".")[0]
        owner = describe(owner_name, modules.get(owner_name, model))
        sizes = [s for s in param.shape if s > 1]
        if len(sizes) > 1:
            raise UnsupportedModelError(
                f"bare parameter {pname} of shape {tuple(param.shape)} in {owner} is used in forward and modprune "
                "cannot tell which dimension holds channels. Declare it with the modprune_unwrapped_parameters hook "
                f"(return [(param, channel_dim)]), register a layer pruner for {type(modules.get(owner_name, model)).__name__} "
                "through modprune_register_layer_pruners, or protect its category",
                pname,
            )
        handled.append(f"{pname} in {owner} (dim {dim})")
    if not handled:
        return []
    return [f"bare parameters pruned along their only channel dimension: {_short_list(handled)}"]


@contextlib.contextmanager
def module_stack(model: nn.Module) -> Iterator[list[str]]:
    """Track which modules are running: after an exception the list ends with the innermost one."""
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[str] = []

    def enter(module: nn.Module, _args: Any) -> None:
        stack.append(describe(names.get(id(module), "?"), module))

    def leave(_module: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop()

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _culprit(exc: BaseException, model: nn.Module) -> str | None:
    """The innermost model module a torch-pruning frame was working on when ``exc`` was raised.

    Looks at the frames' local variables: modules, dependencies, and graph nodes (an operation such
    as a reshape is named by the nearest model module feeding it, and that module's parent block).
    """
    names = {id(m): n for n, m in model.named_modules()}
    frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in reversed(frames):
        local = frame.f_locals
        candidates = [local.get(k) for k in ("module", "layer", "m", "root")]
        dep = local.get("dep")
        if dep is not None and hasattr(dep, "target"):
            candidates.insert(0, dep.target.module)
        for cand in candidates:
            if isinstance(cand, nn.Module) and id(cand) in names:
                return describe(names[id(cand)], cand)
        for value in local.values():
            if hasattr(value, "inputs") and hasattr(value, "module") and hasattr(value, "grad_fn"):
                found = _nearest_module(value, names)
                if found is not None:
                    op = type(value.module).__name__.strip("_").replace("Op", "").lower() or "operation"
                    name, module = found
                    parent = name.rpartition(".")[0]
                    block = describe(parent, model.get_submodule(parent)) if parent else describe(name, module)
                    return f"a {op} in {block}, after {describe(name, module)}"
    return None


def _nearest_module(node: Any, names: dict[int, str], limit: int = 50) -> tuple[str, nn.Module] | None:
    """The closest graph node upstream of ``node`` that is a module of the model."""
    queue, seen = [node], set()
    while queue and len(seen) < limit:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        module = current.module
        if isinstance(module, nn.Module) and id(module) in names:
            return names[id(module)], module
        queue.extend(current.inputs)
    return None


#: What to do, by the phase that failed.
ADVICE = {
    "tracing": (
        "torch-pruning cannot trace this part of the model. Register a layer pruner for the block's type through "
        "modprune_register_layer_pruners (torch-pruning then treats the block as one layer), or rewrite the block "
        "into prunable layers through modprune_prepare_model"
    ),
    "pruning": (
        "Protect that module's category (config.protect), or register a layer pruner for its type through "
        "modprune_register_layer_pruners"
    ),
    "running": (
        "The pruned model no longer runs: a module probably keeps channel counts as plain numbers (e.g. split "
        "sizes) that pruning cannot see. Update them in a modprune_finalize_model hook, rewrite the block through "
        "modprune_prepare_model, or protect that module's category (config.protect). The model was modified"
    ),
}


def unsupported_from(exc: BaseException, model: nn.Module, stack: list[str], phase: str) -> UnsupportedModelError:
    """An :class:`UnsupportedModelError` naming the module behind ``exc`` and what to do.

    :param phase: ``tracing`` (building the dependency graph), ``running`` (a forward of the pruned model)
        or ``pruning`` (any other phase).
    """
    where = stack[-1] if stack else _culprit(exc, model)
    subject = where or f"the model ({type(model).__name__})"
    verb = {"tracing": "tracing the model", "running": "running the pruned model"}.get(phase, "pruning")
    return UnsupportedModelError(
        f"structured pruning failed while {verb} at {subject}: {type(exc).__name__}: {str(exc)[:300]}. "
        f"{ADVICE.get(phase, ADVICE['pruning'])}",
        where or model,
    )


def type_changes(before: Counter[str], after: Counter[str]) -> str:
    """``C2f x8 -> SplitC2f x8``-style summary of the block types a preparation replaced or added."""
    gone = {k: v - after.get(k, 0) for k, v in before.items() if k not in after}
    new = {k: v for k, v in after.items() if k not in before}
    if not gone and not new:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return f"module counts changed ({', '.join(changed)})"
    left = ", ".join(f"{k} x{v}" for k, v in sorted(gone.items()))
    right = ", ".join(f"{k} x{v}" for k, v in sorted(new.items()))
    return f"{left or 'nothing'} -> {right or 'nothing'}"
