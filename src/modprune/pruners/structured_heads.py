"""The structured pruner's attention and trace-budget helpers: which plugin-described attention
modules may lose heads (and at which ratio), and the error raised when tracing runs out of time."""

from __future__ import annotations

from torch import nn

from modprune.config import PruneConfig
from modprune.exceptions import PluginError, TraceTimeoutError
from modprune.pruners.base import PruneContext
from modprune.pruners.heads import HeadLayout
from modprune.pruners.structured_setup import _culprit, describe
from modprune.pruners.trace_budget import BudgetExceeded, block_of

__all__ = ["attention_layouts", "over_budget"]


def attention_layouts(
    model: nn.Module, config: PruneConfig, ctx: PruneContext, head_ratio: float | None
) -> list[tuple[str, HeadLayout, float]]:
    """``(qualified name, layout, ratio)`` of each attention module plugins describe that may lose heads.

    Modules in ``config.protect_modules`` or in a protected category (ratio 0) are left out. The ratio
    is ``head_ratio`` or, when None, ``target * ratio_for(category)`` capped at ``max_ratio``.

    :raises PluginError: a plugin returned something that is not a :class:`HeadLayout`.
    """
    names = {id(m): n for n, m in model.named_modules()}
    out: list[tuple[str, HeadLayout, float]] = []
    for layout in ctx.attention_heads(model):
        if not isinstance(layout, HeadLayout):
            raise PluginError(
                f"modprune_attention_heads returned {layout!r}, not a modprune.pruners.heads.HeadLayout; fix the "
                "plugin or uninstall it",
                layout,
                hook="modprune_attention_heads",
            )
        name = names.get(id(layout.module))
        if name is None or config.protects_module(name):
            continue
        ratio = config.ratio_for(ctx.categories.modules.get(name, "attention"))
        if ratio <= 0:
            continue
        ratio = head_ratio if head_ratio is not None else min(config.max_ratio, config.target * ratio)
        if ratio > 0:
            out.append((name, layout, ratio))
    return out


def _where(exc: BaseException, model: nn.Module, stack: list[str]) -> tuple[str, str]:
    """(description of the module being traced, qualified name of its block)."""
    names = {describe(n, m): n for n, m in model.named_modules()}
    where = stack[-1] if stack else _culprit(exc, model)
    if where is None:
        return f"the model ({type(model).__name__})", ""
    name = names.get(where)
    if name is None:  # "a reshape in <block>, after <module>": the first module named in it
        name = next((n for d, n in names.items() if d in where and n), "")
    return where, block_of(model, name) if name else ""


def over_budget(exc: BudgetExceeded, model: nn.Module, stack: list[str]) -> TraceTimeoutError:
    """The :class:`TraceTimeoutError` for a dependency graph that ran past its time budget."""
    where, block = _where(exc, model, stack)
    advice = (f"protect that block (protect_modules: ['{block}'], or --protect-module {block}) " if block
              else "protect the block it is in (protect_modules) ")
    return TraceTimeoutError(
        f"building the dependency graph took more than {exc.seconds:g} s and was stopped at {where}"
        f"{f' in block {block}' if block else ''}. Tracing this block grows without end (torch-pruning builds "
        f"a pruning group through it); {advice}so that it is left as it is, or raise pruner_options "
        "trace_budget (seconds; null: no limit)",
        block or where,
    )
