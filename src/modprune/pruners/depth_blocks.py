"""Removable blocks for depth pruning: what plugins offer, what a config allows, what each removal costs.

A :class:`RemovableBlock` is a module whose removal keeps every tensor shape of the model:

* ``removal="identity"``: a residual block computing ``x + f(x)`` (ultralytics' ``Bottleneck`` with
  ``add``, a plugin's residual bottleneck). It is replaced by ``nn.Identity``, so the branch ``f``
  disappears and the shortcut ``x`` passes on;
* ``removal="none"``: an optional branch its parent skips when the attribute is ``None`` (e.g. a mixer
  whose parent computes ``out + mixer(p) * mask`` only when it has one). The attribute is set to ``None``.

Plugins offer blocks through the ``modprune_removable_blocks`` hook; :func:`removable_blocks` collects,
checks and deduplicates them, :func:`allowed_blocks` drops those the config or the plugins protect, and
:func:`measure_effects` removes each candidate alone (temporarily) on a calibration batch to see how
much the model's output changes and how many MACs go.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modprune.exceptions import ConfigError, ModpruneError
from modprune.measure.walk import call_model, tensors_of

if TYPE_CHECKING:  # pragma: no cover
    from modprune.config import PruneConfig
    from modprune.detectors.classify import Categories

__all__ = ["REMOVALS", "BlockEffect", "RemovableBlock", "allowed_blocks", "eval_mode", "measure_effects", "remove_block",
           "removable_blocks", "swapped"]

log = logging.getLogger(__name__)

#: How a block is removed: replaced by ``nn.Identity``, or its attribute set to ``None``.
REMOVALS = ("identity", "none")


@dataclass(frozen=True)
class RemovableBlock:
    """A module a depth pruner may remove without changing any tensor shape.

    :param module: the module itself.
    :param name: its qualified name in the model (as ``model.named_modules()`` gives it).
    :param kind: what sort of unit it is, for ``pruner_options.kinds`` and the report: ``"residual"``
        (the block's output is added to its input) or ``"optional"`` (a branch the parent can skip).
    :param removal: ``"identity"`` (replace by ``nn.Identity``: only valid when the block computes
        ``x + f(x)`` with ``f(x)`` shaped like ``x``) or ``"none"`` (set the parent's attribute to ``None``:
        only valid when the parent's forward then skips it).
    """

    module: nn.Module
    name: str
    kind: str = "residual"
    removal: str = "identity"

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise ConfigError(f"RemovableBlock.module must be an nn.Module, got {type(self.module).__name__}",
                              self.module)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"RemovableBlock.name must be the module's qualified name, got {self.name!r}", self.name)
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"RemovableBlock.kind must be a non-empty string, got {self.kind!r}", self.kind)
        if self.removal not in REMOVALS:
            raise ConfigError(f"RemovableBlock.removal {self.removal!r} is not valid; valid: {', '.join(REMOVALS)}",
                              self.removal)


def _place(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def remove_block(model: nn.Module, block: RemovableBlock) -> nn.Module | None:
    """Remove ``block`` from ``model`` in place; returns what now sits in its place."""
    parent, attr = _place(model, block.name)
    new = nn.Identity() if block.removal == "identity" else None
    setattr(parent, attr, new)
    return new


class swapped:  # noqa: N801 - used like a function: ``with swapped(model, block): ...``
    """Context manager: ``block`` removed from ``model`` inside the ``with``, put back afterwards."""

    def __init__(self, model: nn.Module, block: RemovableBlock) -> None:
        self.model, self.block = model, block

    def __enter__(self) -> None:
        remove_block(self.model, self.block)

    def __exit__(self, *_: Any) -> None:
        parent, attr = _place(self.model, self.block.name)
        setattr(parent, attr, self.block.module)


def removable_blocks(model: nn.Module, offered: Iterator[Any] | list[Any]) -> list[RemovableBlock]:
    """The valid, distinct blocks among ``offered`` (the hook's results, flattened), in model order.

    An entry that is not a :class:`RemovableBlock`, or whose name does not lead to its module in ``model``,
    is skipped with a warning; a module offered twice (by two plugins) is kept once (the first offer).
    """
    modules = dict(model.named_modules())
    found: dict[int, RemovableBlock] = {}
    for block in offered:
        if not isinstance(block, RemovableBlock):
            log.warning("modprune_removable_blocks: skipping %r (expected a modprune RemovableBlock)", block)
            continue
        if modules.get(block.name) is not block.module or not block.name:
            log.warning("modprune_removable_blocks: skipping %s: %r is not its qualified name in the model",
                        type(block.module).__name__, block.name)
            continue
        found.setdefault(id(block.module), block)
    order = {id(m): i for i, m in enumerate(modules.values())}
    return sorted(found.values(), key=lambda b: order[id(b.module)])


def _inside(name: str, other: str) -> bool:
    """Whether module ``name`` is ``other`` or lies inside it."""
    return name == other or name.startswith(f"{other}.")


def allowed_blocks(
    model: nn.Module,
    blocks: list[RemovableBlock],
    config: PruneConfig,
    categories: Categories,
    protected: list[nn.Module],
    kinds: tuple[str, ...] | None = None,
) -> tuple[list[RemovableBlock], list[str]]:
    """The blocks that may go, and one note per reason others stay.

    A block stays when its kind is not in ``kinds`` (None: every kind), when it or any module or
    parameter inside it is in a protected category (or one with ratio 0), when ``protect_modules`` names it,
    a module inside it or one around it, or when a module a plugin protects (``modprune_protected_modules``)
    is inside it or around it.
    """
    names = {id(m): n for n, m in model.named_modules()}
    guarded = [names[id(m)] for m in protected if id(m) in names]
    kept: list[RemovableBlock] = []
    why: dict[str, list[str]] = {}
    for block in blocks:
        reason = _protection(block, config, categories, guarded, kinds)
        if reason:
            why.setdefault(reason, []).append(block.name)
        else:
            kept.append(block)
    notes = [f"blocks kept ({reason}): {', '.join(n[:6])}{' ...' if len(n) > 6 else ''}" for reason, n in why.items()]
    return kept, notes


def _protection(
    block: RemovableBlock, config: PruneConfig, categories: Categories, guarded: list[str],
    kinds: tuple[str, ...] | None,
) -> str:
    """Why ``block`` must stay ('' when it may go)."""
    if kinds is not None and block.kind not in kinds:
        return f"kind {block.kind!r} not in pruner_options kinds"
    inner = [n for n, _ in block.module.named_modules()]
    full = [f"{block.name}.{n}" if n else block.name for n in inner]
    if config.protect_modules and any(config.protects_module(n) for n in full):
        return "protect_modules"
    if any(_inside(block.name, g) or _inside(g, block.name) for g in guarded):
        return "protected by a plugin"
    cats = {categories.modules.get(n) for n in full}
    cats |= {c for p, c in categories.params.items() if _inside(p.rpartition(".")[0], block.name)}
    if any(c is not None and config.ratio_for(c) <= 0 for c in cats):
        return "protected category"
    return ""


@dataclass(frozen=True)
class BlockEffect:
    """What removing one block alone does on the calibration batch.

    :param change: the mean over the tensors the model returns of ``||y' - y|| / ||y||`` (y with every block,
        y' with this one removed); inf when the removal changes an output's shape or the forward fails.
    :param macs: MACs the removal saves (FlopCounterMode, like :func:`modprune.measure.count_macs`).
    :param params: parameters the removal saves.
    """

    block: RemovableBlock
    change: float
    macs: int
    params: int


def _counted_forward(model: nn.Module, inputs: Any) -> tuple[list[torch.Tensor], int, dict[str, int]]:
    """Outputs, MACs of the whole forward and MACs per module (by qualified name) of one counted forward."""
    with FlopCounterMode(display=False) as counter:
        out = call_model(model, inputs)
    root = type(model).__name__
    per_module = {key[len(root) + 1:]: int(sum(v.values())) // 2
                  for key, v in counter.get_flop_counts().items() if key.startswith(f"{root}.")}
    return _outputs(out), int(counter.get_total_flops()) // 2, per_module


def _outputs(out: Any) -> list[torch.Tensor]:
    return [t.detach().float() for t in tensors_of(out)]


def _change(base: list[torch.Tensor], now: list[torch.Tensor]) -> float:
    """Mean over the output tensors of ``||b' - b|| / ||b||`` (inf when a shape changed)."""
    if len(base) != len(now) or any(a.shape != b.shape for a, b in zip(base, now)):
        return float("inf")
    if not base:
        return 0.0
    changes = []
    for a, b in zip(base, now):
        diff, norm = float(torch.linalg.vector_norm(a - b)), float(torch.linalg.vector_norm(a))
        changes.append(diff / norm if norm > 0 else diff)
    return sum(changes) / len(changes)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def measure_effects(model: nn.Module, blocks: list[RemovableBlock], inputs: Any) -> tuple[list[BlockEffect], int]:
    """Each block's :class:`BlockEffect` (removed alone, then put back) and the model's MACs with every block.

    One forward under ``FlopCounterMode`` gives the MACs of the model and of each block (what its removal saves:
    the replacement costs none), then one plain forward per block gives the output change. The model runs in
    eval mode (every module's mode is restored); it is unchanged afterwards.

    :raises ModpruneError: the model's forward fails on ``inputs`` with every block in place.
    """
    with eval_mode(model):
        try:
            base, macs, per_module = _counted_forward(model, inputs)
        except Exception as exc:  # the model's own forward can fail in any way on bad inputs
            raise ModpruneError(f"depth pruning: the model's forward failed on the calibration batch: "
                                f"{type(exc).__name__}: {exc}", model) from exc
        effects = [BlockEffect(b, _removal_change(model, b, inputs, base), per_module.get(b.name, 0),
                               _params(b.module)) for b in blocks]
    return effects, macs


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside the ``with``; afterwards each module's own flag as it was (a model
    mixing modes keeps its mix, which ``model.train(was_training)`` would not)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _removal_change(model: nn.Module, block: RemovableBlock, inputs: Any, base: list[torch.Tensor]) -> float:
    """The output change when ``block`` alone is removed (inf when that breaks the forward)."""
    with swapped(model, block):
        try:
            return _change(base, _outputs(call_model(model, inputs)))
        except Exception as exc:  # a plugin offered a block whose removal breaks the forward
            log.warning("depth pruning: removing %s breaks the forward (%s: %s); kept", block.name,
                        type(exc).__name__, exc)
            return float("inf")
