"""Iterative pruning with recovery: prune a step, fine-tune, repeat until the target; resumable.

:func:`prune_iteratively` runs ``K`` steps. Step ``k`` asks :func:`modprune.prune` (one call, the
pruner's own ``steps`` forced to 1) for a target computed against the *current* model so that the
cumulative reduction against the *original* model becomes ``target * f(k / K)``::

    wanted_k = original * (1 - target * f(k / K))   # MACs, params or nonzero weights left after step k
    step_target_k = 1 - wanted_k / current_k

``f`` is the schedule: ``linear`` (``f(t) = t``, the default) or ``cubic`` (``f(t) = 1 - (1 - t)**3``,
Zhu & Gupta's gradual pruning: large cuts first).

Because every step measures what the model holds now, an over- or undershoot of one step is corrected
by the next, and the last step aims at the final target itself.

The fine-tuning budget can be split unevenly: ``step_epochs=(1, 1, 1, 5)`` trains 1 epoch after each of
the first three cuts and 5 after the last, the same 8 epochs as ``options.epochs=2`` per step but most of
them on the final architecture (gradual pruning followed by a recovery phase, as in Zhu & Gupta). A step
of 0 epochs prunes only.

Fine-tuned weights are kept: after each step the fine-tuned weights are loaded *into the same module*
(the architecture is unchanged by fine-tuning), so the ``model`` passed in ends pruned and fine-tuned,
and :attr:`IterativeResult.model` is that very object. (``finetune`` itself still returns a copy; the
workflow copies the weights back.) After a ``resume`` the model is read from the last checkpoint, so use
``result.model`` then.

Checkpoints: with ``checkpoint_dir`` the original model (``teacher.pt``, also the distillation teacher),
each finished step (``step-K.pt``, via :func:`modprune.save`) and a small ``state.json`` are written.
``resume=True`` continues after the last finished step with the same config and step count.

This module imports ultralytics only when it fine-tunes with :func:`modprune.integrations.ultralytics.
trainer.finetune` (``data`` and ``options`` given without a ``finetune_fn``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from modprune.config import PruneConfig
from modprune.exceptions import ConfigError, OutputPathError

__all__ = ["SCHEDULES", "FinetuneFn", "IterativeResult", "StepRecord", "check_step_epochs", "prune_iteratively",
           "schedule_fraction", "step_target"]

LOG = logging.getLogger(__name__)
STATE_FILE = "state.json"
TEACHER_FILE = "teacher.pt"
STATE_FORMAT = 1

FinetuneFn = Callable[[nn.Module, int], nn.Module]
"""``fn(model, step) -> tuned``: fine-tunes the pruned model after ``step`` (1-based); may return a copy."""


@dataclass(frozen=True)
class StepRecord:
    """One finished step: the cumulative goal, what the pruner was asked, and what was reached."""

    step: int
    wanted: float
    step_target: float
    achieved: float
    finetuned: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class IterativeResult:
    """What :func:`prune_iteratively` did. ``achieved`` is the cumulative reduction of ``target_kind``
    against the original model; ``model`` is the pruned (and fine-tuned) model."""

    model: nn.Module
    target: float
    target_kind: str
    steps: list[StepRecord] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def achieved(self) -> float:
        """Cumulative reduction after the last step (0.0 before any)."""
        return self.steps[-1].achieved if self.steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no model)."""
        return {"target": self.target, "target_kind": self.target_kind, "achieved": self.achieved,
                "resumed_from": self.resumed_from, "steps": [s.to_dict() for s in self.steps]}


#: How the cumulative target grows over the steps (see :func:`schedule_fraction`).
SCHEDULES = ("linear", "cubic")


def schedule_fraction(step: int, steps: int, schedule: str = "linear") -> float:
    """The share of the final target reached after ``step`` of ``steps``.

    ``linear``: ``step / steps``, equal cuts. ``cubic``: ``1 - (1 - step / steps) ** 3``, the gradual pruning
    schedule of Zhu & Gupta ("To prune, or not to prune", 2017): large cuts first, while the model has the
    most redundancy, then smaller ones, so the later steps (and the last fine-tuning) mostly recover.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule {schedule!r} is not one of {', '.join(SCHEDULES)}", obj=schedule)
    t = step / steps
    return t if schedule == "linear" else 1.0 - (1.0 - t) ** 3


def step_target(original: float, current: float, target: float, step: int, steps: int,
                schedule: str = "linear") -> float:
    """The fraction to remove from the current model so the cumulative reduction is
    ``target * schedule_fraction(step, steps, schedule)`` (``target*step/steps`` for ``linear``).

    0.0 when the model is already at or past that point.
    """
    wanted_left = original * (1.0 - target * schedule_fraction(step, steps, schedule))
    if current <= 0 or wanted_left >= current:
        return 0.0
    return min(1.0 - wanted_left / current, 0.999)


def measure(model: nn.Module, kind: str, example_inputs: Any, pm: Any = None) -> float:
    """The amount of ``kind`` (``macs``, ``params`` or ``nonzero``) the model holds, as prune() counts it."""
    from modprune import api  # noqa: PLC0415
    from modprune.report import category_table  # noqa: PLC0415

    if kind == "macs":
        if example_inputs is None:
            raise ConfigError("a MACs target needs example_inputs", obj=kind)
        return float(api._macs(model, example_inputs))
    params, nonzero = api._totals(category_table(model, api.categorize(model, pm)))
    return float(params if kind == "params" else nonzero)


def prune_iteratively(
    model: nn.Module,
    config: PruneConfig,
    data: str | os.PathLike[str] | None = None,
    options: Any = None,
    *,
    steps: int,
    example_inputs: Any = None,
    distill: bool | str = False,
    finetune_fn: FinetuneFn | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    schedule: str = "linear",
    step_epochs: Sequence[int] | None = None,
    pm: Any = None,
) -> IterativeResult:
    """Prune ``model`` to ``config.target`` in ``steps`` steps, fine-tuning after each; see the module doc.

    Args:
        model: The model to prune; modified in place (pruned, then the fine-tuned weights loaded).
        config: The pruning config; its ``target`` is the final cumulative target against the original
            model, its ``steps`` is ignored (each step is one pruner call).
        data: Dataset yaml for the built-in fine-tuning (with ``options``).
        options: :class:`~modprune.integrations.ultralytics.trainer.FinetuneOptions`; each step trains
            with ``name=f"{options.name}-step{k}"``.
        steps: Number of prune/fine-tune steps (>= 1).
        example_inputs: A batch the model accepts (MACs targets and structured pruning need it).
        distill: Distil from the original (unpruned) model during the built-in fine-tuning: ``True`` uses
            ``options.distill`` (the mode), a string sets the mode (``"output"``, ``"feature"``, ``"both"``).
        finetune_fn: Own fine-tuning ``fn(model, step) -> model`` instead of the built-in one.
        checkpoint_dir: Where to write checkpoints and ``state.json`` (needed for ``resume``).
        resume: Continue an interrupted run from ``checkpoint_dir``.
        schedule: How the cumulative target grows: ``"linear"`` (``target * k / steps``, equal cuts) or
            ``"cubic"`` (Zhu & Gupta's gradual schedule, large cuts first; :func:`schedule_fraction`).
        step_epochs: Built-in fine-tuning epochs per step (integers >= 0; 0: prune only), not ``options.epochs``.
        pm: Plugin manager (default: the global one).

    Returns:
        :class:`IterativeResult` (``result.model`` is the final model).

    Raises:
        ConfigError: bad arguments, or a resume whose state does not match.
        OutputPathError: ``checkpoint_dir`` holds a run and ``resume`` is False.
    """
    from modprune import api  # noqa: PLC0415

    epochs = _check_args(steps, schedule, step_epochs, builtin=finetune_fn is None and options is not None)
    config = dataclasses.replace(api.resolve_config(config, pm), steps=1)
    kind = str(config.target_kind)
    run = _Checkpoints(checkpoint_dir, config, steps, schedule, epochs) if checkpoint_dir is not None else None
    model, original, records, teacher = _start(model, kind, example_inputs, run, resume, distill, pm)
    tune = finetune_fn or _builtin_finetune(data, options, teacher, distill, epochs)
    result = IterativeResult(model, config.target, kind, list(records), resumed_from=len(records))
    for k in range(len(records) + 1, steps + 1):
        step_tune = tune if epochs is None or epochs[k - 1] else None
        result.steps.append(_one_step(model, config, (k, steps, schedule), original, example_inputs, step_tune, pm))
        if run is not None:
            run.save_step(model, original, result.steps, pm)
    LOG.info("iterative pruning: %d steps, %s reduction %.4f (target %.4f)", steps, kind, result.achieved, config.target)
    return result


def _check_args(steps: Any, schedule: str, step_epochs: Sequence[int] | None, *, builtin: bool) -> list[int] | None:
    """Raise before anything is written for a bad step count, schedule or ``step_epochs``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps={steps!r} must be an integer >= 1", obj=steps)
    schedule_fraction(1, steps, schedule)
    return check_step_epochs(step_epochs, steps, builtin=builtin)


def check_step_epochs(step_epochs: Sequence[int] | None, steps: int, *, builtin: bool = True) -> list[int] | None:
    """``step_epochs`` as a list (None stays None); raise unless it holds one integer >= 0 per step, at
    least one of them positive, and the built-in fine-tuning (``data`` and ``options``) runs."""
    if step_epochs is None:
        return None
    values = list(step_epochs) if isinstance(step_epochs, (list, tuple)) else None
    if values is None or len(values) != steps or any(isinstance(e, bool) or not isinstance(e, int) or e < 0
                                                     for e in values) or not any(values):
        raise ConfigError(f"step_epochs={step_epochs!r} must hold {steps} integers >= 0 (one per step), not all 0",
                          obj=step_epochs)
    if not builtin:
        raise ConfigError("step_epochs sets the built-in fine-tuning's epochs: give data and options, not a "
                          "finetune_fn (which decides its own)", obj=step_epochs)
    return values


def _start(model: nn.Module, kind: str, example_inputs: Any, run: _Checkpoints | None, resume: bool,
           distill: bool | str, pm: Any) -> tuple[nn.Module, float, list[StepRecord], nn.Module | None]:
    """(model, original amount, finished steps, teacher) for a fresh or resumed run."""
    state = run.start(model, resume, pm) if run is not None else None
    if state is not None:
        model, original, records = state
    else:
        original, records = measure(model, kind, example_inputs, pm), []
    teacher = run.teacher(pm) if run is not None and distill else (copy.deepcopy(model) if distill else None)
    return model, original, records, teacher


def _one_step(model: nn.Module, config: PruneConfig, where: tuple[int, int, str], original: float,
              example_inputs: Any, tune: FinetuneFn | None, pm: Any) -> StepRecord:
    """Prune step ``k`` of ``where = (k, steps, schedule)`` against the current model, fine-tune, keep the
    fine-tuned weights."""
    from modprune import api  # noqa: PLC0415

    k, steps, schedule = where
    kind = str(config.target_kind)
    wanted = config.target * schedule_fraction(k, steps, schedule)
    current = measure(model, kind, example_inputs, pm)
    target_k = step_target(original, current, config.target, k, steps, schedule)
    if target_k > 0:
        api.prune(model, dataclasses.replace(config, target=target_k), example_inputs, pm=pm)
    if tune is not None:
        keep_weights(model, tune(model, k))
    achieved = 1.0 - measure(model, kind, example_inputs, pm) / original if original else 0.0
    LOG.info("step %d/%d: asked %.4f of the current model, cumulative %.4f (wanted %.4f)", k, steps, target_k,
             achieved, wanted)
    return StepRecord(k, wanted, target_k, achieved, tune is not None)


def keep_weights(model: nn.Module, tuned: nn.Module) -> None:
    """Load ``tuned``'s weights into ``model`` (same architecture); a no-op when they are one object."""
    if tuned is model:
        return
    if not isinstance(tuned, nn.Module):
        raise ConfigError(f"the fine-tune function returned {type(tuned).__name__}, not the tuned module", obj=tuned)
    try:
        model.load_state_dict(tuned.state_dict())
    except RuntimeError as exc:
        raise ConfigError("the fine-tuned model's architecture differs from the pruned one; fine-tuning must "
                          f"keep the architecture ({' '.join(str(exc).split())[:200]})", obj=tuned) from exc
    model.float().eval()


def _builtin_finetune(data: Any, options: Any, teacher: nn.Module | None, distill: bool | str,
                      step_epochs: list[int] | None = None) -> FinetuneFn | None:
    """The ultralytics fine-tune step (None when neither data nor options are given: prune only)."""
    if data is None and options is None:
        if distill:
            raise ConfigError("distill needs data and FinetuneOptions (or a finetune_fn)", obj=distill)
        return None
    if data is None or options is None:
        raise ConfigError("fine-tuning needs both data (a dataset yaml) and options (FinetuneOptions)",
                          obj=(data, options))
    from modprune.integrations.ultralytics.trainer import finetune  # noqa: PLC0415

    if isinstance(distill, str):
        options = dataclasses.replace(options, distill=distill)

    def tune(model: nn.Module, k: int) -> nn.Module:
        epochs = options.epochs if step_epochs is None else step_epochs[k - 1]
        step_options = dataclasses.replace(options, name=f"{options.name}-step{k}", epochs=epochs)
        return finetune(model, data, step_options, teacher=teacher)

    return tune


class _Checkpoints:
    """``checkpoint_dir`` layout: ``teacher.pt`` (the original), ``step-K.pt``, ``state.json``."""

    def __init__(self, folder: str | os.PathLike[str], config: PruneConfig, steps: int, schedule: str,
                 step_epochs: list[int] | None = None) -> None:
        self.dir = Path(folder).expanduser()
        self.config = config
        self.steps = steps
        self.schedule = schedule
        self.step_epochs = step_epochs

    def start(self, model: nn.Module, resume: bool, pm: Any) -> tuple[nn.Module, float, list[StepRecord]] | None:
        """Prepare a fresh run (None), or load the state of one to resume."""
        from modprune.serialization import load, save  # noqa: PLC0415

        path = self.dir / STATE_FILE
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            save(model, self.dir / TEACHER_FILE, metadata={"iterative": "original model"}, pm=pm)
            return None
        if not resume:
            raise OutputPathError(f"{str(self.dir)!r} holds an iterative run; pass resume=True (--resume) to "
                                  "continue it or choose another checkpoint folder", str(self.dir))
        state = json.loads(path.read_text())
        self._check(state)
        records = [StepRecord(**r) for r in state["records"]]
        if not records:
            return None if (self.dir / TEACHER_FILE).exists() else self._missing(TEACHER_FILE)
        LOG.info("resuming after step %d of %d from %s", len(records), self.steps, self.dir)
        return load(self.dir / state["checkpoint"], pm=pm), float(state["original"]), records

    def _check(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT or state.get("steps") != self.steps \
                or state.get("schedule", "linear") != self.schedule \
                or state.get("step_epochs") != self.step_epochs \
                or state.get("config") != json.loads(json.dumps(self.config.to_dict())):
            raise ConfigError(f"the run in {str(self.dir)!r} used another config, step count, schedule or epochs "
                              f"per step (steps {state.get('steps')}, schedule {state.get('schedule', 'linear')}, "
                              f"step_epochs {state.get('step_epochs')}); resume with the same recipe, --steps, "
                              "--schedule and --finetune-epochs", obj=state)

    def _missing(self, name: str) -> None:
        raise ConfigError(f"{str(self.dir / name)!r} is missing; the checkpoint folder is incomplete", obj=name)

    def teacher(self, pm: Any) -> nn.Module:
        """The original model, as saved when the run started."""
        from modprune.serialization import load  # noqa: PLC0415

        return load(self.dir / TEACHER_FILE, pm=pm)

    def save_step(self, model: nn.Module, original: float, records: list[StepRecord], pm: Any) -> None:
        """Write ``step-K.pt`` then ``state.json`` (atomically, so a crash leaves the previous state)."""
        from modprune.serialization import atomic_path, save  # noqa: PLC0415

        name = f"step-{len(records)}.pt"
        save(model, self.dir / name, metadata={"iterative_step": len(records)}, pm=pm)
        state = {"format": STATE_FORMAT, "steps": self.steps, "schedule": self.schedule,
                 "step_epochs": self.step_epochs,
                 "config": self.config.to_dict(), "original": original,
                 "checkpoint": name, "records": [r.to_dict() for r in records]}
        with atomic_path(self.dir / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(state, indent=2))
