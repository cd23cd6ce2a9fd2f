"""A budgeted search of per-category pruning ratios with Optuna (the ``search`` extra).

Each trial proposes a relative ratio per category (structured pruning, ``category_ratios``), prunes a copy
of the model to the budget (e.g. 40% fewer MACs: the pruner scales the ratios together until the target
is met, so every finished trial meets the budget within its tolerance; a latency budget may also be
exceeded), and scores it with a proxy: without fine-tuning (see :mod:`modprune.workflows.sensitivity`), or
after a short one (:class:`~modprune.integrations.ultralytics.proxy.RecoveryScorer`). A
trial whose ratios cannot reach the budget, or miss it, is recorded as pruned (infeasible) and never
becomes the best.

Trials live in an Optuna study: in memory by default, or in any storage URL Optuna's RDB storage accepts
(``sqlite:///study.db`` for one machine; ``postgresql://...`` or ``mysql://...`` for many workers on many
machines sharing one study). Running again on the same storage and study name resumes it: the new trials
are added to those already there, and the best is taken over all of them.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from modprune import api
from modprune.config import PruneConfig
from modprune.exceptions import ConfigError, UnreachableTargetError
from modprune.optional import require
from modprune.plugins import ModpruneManager, resolve
from modprune.pruners.structured import LATENCY_TOLERANCE  # a latency budget: the pruner's own tolerance
from modprune.recipes import Recipe
from modprune.workflows.sensitivity import Score, prunable_units

__all__ = ["Budget", "SearchResult", "search"]

log = logging.getLogger(__name__)

#: The highest relative ratio a trial proposes for a category (``category_ratios`` are below 1).
MAX_RELATIVE = 0.95
#: A finished trial's measured reduction must be this close to the budget.
DEFAULT_TOLERANCE = 0.01
PARAM = "ratio:"


@dataclass(frozen=True)
class Budget:
    """What must be removed: ``kind`` (a target kind of the structured pruner, e.g. ``macs``) and the
    fraction ``value`` in (0, 1), within ``tolerance`` (None: :data:`DEFAULT_TOLERANCE`, or
    :data:`LATENCY_TOLERANCE` for ``latency``, where removing more is allowed too: see :meth:`met`)."""

    kind: str
    value: float
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"budget kind must be a name such as 'macs', got {self.kind!r}", self.kind)
        if self.tolerance is None:
            default = LATENCY_TOLERANCE if self.kind == "latency" else DEFAULT_TOLERANCE
            object.__setattr__(self, "tolerance", default)
        for name, value, hi in (("budget", self.value, 1.0), ("tolerance", self.tolerance, 0.5)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < hi:
                raise ConfigError(f"{name} must be a number in (0, {hi:g}), got {value!r}", value)

    @classmethod
    def parse(cls, text: str, *, tolerance: float | None = None) -> Budget:
        """``"macs=0.4"`` -> ``Budget("macs", 0.4)``."""
        kind, sep, value = str(text).partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or math.isnan(number):
            raise ConfigError(f"budget {text!r} must look like KIND=FRACTION, e.g. macs=0.4", text)
        return cls(kind.strip(), number, tolerance)

    def met(self, achieved: float) -> bool:
        """Whether a measured reduction meets the budget: within the tolerance, or, for ``latency`` (a
        ceiling on what is left), anything more. An overshooting trial stays in the study and competes
        with less of the model left; the pruner cannot undo a cut that measured deeper than planned."""
        miss = achieved - self.value
        return -self.tolerance <= miss and (miss <= self.tolerance or self.kind == "latency")

    def check(self, pm: ModpruneManager) -> None:
        """Raise unless the structured pruner measures this kind (``channels`` is not a budget)."""
        kinds = [k for k in pm.strategies.pruners.get("structured").target_kinds if k != "channels"]
        if self.kind in kinds:
            return
        raise ConfigError(f"budget kind {self.kind!r} is not valid; valid: {', '.join(kinds)}", self.kind)


@dataclass
class SearchResult:
    """The best trial of a study: its config (a recipe's), objective value and metrics."""

    config: PruneConfig
    objective: str
    value: float
    metrics: dict[str, float]
    achieved: float
    trial: int
    complete: int
    infeasible: int
    study_name: str
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def recipe(self, name: str, description: str = "", *, finetune: Mapping[str, Any] | None = None,
               proxy: str = "without fine-tuning") -> Recipe:
        """The best config as a :class:`~modprune.recipes.Recipe` (``to_yaml`` writes it for ``--recipe``),
        with ``finetune`` settings (a recipe's ``finetune`` section) if given; ``proxy`` says in the default
        description how the trials were scored."""
        text = description or (f"found by modprune search (study {self.study_name!r}, trial {self.trial} of "
                               f"{self.complete} finished): {self.objective} {self.value:.4f} {proxy}, "
                               f"{self.config.target_kind} reduction {self.achieved:.4f}")
        return Recipe(name, text, self.config, finetune=dict(finetune or {}))


def _direction(objective: str) -> str:
    return "minimize" if objective.endswith("loss") else "maximize"


#: Methods whose channel stage takes the searched ``category_ratios``; a base of another method searches
#: with ``structured``.
RATIO_METHODS = ("structured", "depth+structured")


def _trial_config(base: PruneConfig, budget: Budget, ratios: Mapping[str, float]) -> PruneConfig:
    """The base with the trial's ratios. Categories not searched get ratio 0, except under a depth stage,
    which keeps a block only when nothing inside it is at ratio 0: there they keep the base's default."""
    method = base.method if base.method in RATIO_METHODS else "structured"
    default = base.default_ratio if method == "depth+structured" else 0.0
    return dataclasses.replace(base, method=method, target=budget.value, target_kind=budget.kind,
                               category_ratios=dict(ratios), default_ratio=default, steps=1)


@dataclass
class _Objective:
    """One trial: propose ratios, prune a copy to the budget, score it."""

    model: nn.Module
    score: Score
    example_inputs: Any
    base: PruneConfig
    budget: Budget
    objective: str
    categories: Sequence[str]
    pm: ModpruneManager
    latency_table: Any = None

    def __call__(self, trial: Any) -> float:
        import optuna  # noqa: PLC0415

        ratios = {c: trial.suggest_float(f"{PARAM}{c}", 0.0, MAX_RELATIVE) for c in self.categories}
        work = copy.deepcopy(self.model)
        try:
            report = api.prune(work, _trial_config(self.base, self.budget, ratios), self.example_inputs, pm=self.pm,
                               latency_table=self.latency_table)
        except UnreachableTargetError as exc:
            trial.set_user_attr("infeasible", str(exc)[:500])
            raise optuna.TrialPruned(f"budget unreachable with these ratios: {exc}") from None
        achieved = float(report.achieved)
        trial.set_user_attr("achieved", achieved)
        if not self.budget.met(achieved):
            trial.set_user_attr("infeasible", f"achieved {achieved:.4f}, budget {self.budget.value}")
            raise optuna.TrialPruned(f"achieved {achieved:.4f}, outside the budget {self.budget.value}")
        metrics = {k: float(v) for k, v in self.score(work).items()}
        trial.set_user_attr("metrics", metrics)
        if self.objective not in metrics:
            raise ConfigError(f"objective {self.objective!r} is not a metric of the proxy; it gives "
                              f"{', '.join(metrics)}", self.objective)
        return metrics[self.objective]


def _storage(url: str | None) -> Any:
    """Optuna's RDB storage for ``url`` (SQLite waits for a locked file instead of failing), or None."""
    if url is None:
        return None
    import optuna  # noqa: PLC0415

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # workers creating the same new file at once can collide on the schema
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:  # sqlalchemy's OperationalError and friends
            text = str(exc)
            if attempt == 4 or not any(w in text for w in ("locked", "exists", "UNIQUE constraint")):
                raise ConfigError(f"cannot open the study storage {url!r}: {type(exc).__name__}: {exc}", url) from exc
            time.sleep(0.2 * (attempt + 1))
    return None  # pragma: no cover - the loop returns or raises


def _study(storage: str | None, name: str, direction: str, seed: int | None, attrs: Mapping[str, Any]) -> Any:
    """The study (created or loaded); a loaded one must have been created for the same search."""
    import optuna  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=_storage(storage), study_name=name, direction=direction,
                                sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    known = study.user_attrs
    differ = {k: (known[k], v) for k, v in attrs.items() if k in known and known[k] != v}
    if differ:
        raise ConfigError(f"study {name!r} was created for another search ({differ}: stored, asked); choose "
                          "another --study name or storage", name)
    for key, value in attrs.items():
        if key not in known:
            study.set_user_attr(key, value)
    return study


def _progress(say: Callable[[str], None], objective: str, budget: Budget, total: int) -> Callable[..., None]:
    import optuna  # noqa: PLC0415

    done = [0]

    def callback(study: Any, trial: Any) -> None:
        done[0] += 1
        if trial.state == optuna.trial.TrialState.COMPLETE:
            what = f"{objective} {trial.value:.4f}, {budget.kind} -{trial.user_attrs.get('achieved', 0):.4f}"
        else:
            what = f"infeasible ({trial.user_attrs.get('infeasible', trial.state.name.lower())[:120]})"
        best = _best(study)
        tail = f"best so far: trial {best.number}, {objective} {best.value:.4f}" if best else "no feasible trial yet"
        say(f"trial {trial.number} ({done[0]}/{total} of this run): {what}; {tail}")

    return callback


def _best(study: Any) -> Any:
    import optuna  # noqa: PLC0415

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: (t.value, -t.number) if pick is max else (t.value, t.number))


def search(
    model: nn.Module,
    score: Score,
    example_inputs: Any,
    *,
    budget: Budget | str,
    objective: str = "mAP50",
    trials: int = 20,
    storage: str | None = None,
    study_name: str = "modprune-search",
    config: PruneConfig | None = None,
    categories: Sequence[str] | None = None,
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
    pm: ModpruneManager | None = None,
    latency_table: Any = None,
    proxy: str | None = None,
) -> SearchResult:
    """Search per-category ratios that meet ``budget`` and optimise ``objective`` (``model`` is not modified).

    :param score: the proxy, ``score(model) -> {metric: value}``.
    :param budget: a :class:`Budget` or ``"macs=0.4"``.
    :param objective: the proxy metric to optimise; maximised, or minimised when it ends in ``loss``.
    :param trials: trials this call runs (added to those already in a resumed study).
    :param storage: an Optuna RDB storage URL (``sqlite:///search.db``, ``postgresql://...``); None: in memory.
    :param study_name: the study's name in ``storage``; a stored study of another search is refused.
    :param config: the base config (importance, scope, protect, protect_modules, pruner_options, seed); a
        ``depth+structured`` base keeps its depth stage in every trial (e.g. ``tokenc3-lsnet-fast``), any
        other method searches with ``structured``.
    :param categories: the categories searched (default every prunable, unprotected one); others stay at 0.
    :param seed: the sampler's seed (None: random; give each parallel worker its own).
    :param latency_table: for a ``latency`` budget, the per-layer latency table every trial plans and
        measures with (see :func:`modprune.prune`); None: the backend's table, cached on disk.
    :param proxy: a description of how ``score`` scores (e.g. ``"finetune 1 epoch, nominal batch 16"``), kept
        with the study: resuming it with another description is refused, as trials scored differently do
        not compare. None: not recorded.
    :raises ConfigError: a bad budget, objective or category, or a study made for another search.
    :raises UnreachableTargetError: no trial of the study met the budget.
    """
    require("optuna", "modprune search")
    pm = resolve(pm)
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    budget.check(pm)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials!r}", trials)
    base = config or PruneConfig(method="structured", importance="l1")
    valid = prunable_units(model, "category", protect=base.protect, pm=pm)
    chosen = sorted(categories) if categories is not None else valid
    if not chosen or any(c not in valid for c in chosen):
        raise ConfigError(f"search categories {list(chosen)} must be some of {', '.join(valid) or 'none'}", chosen)
    attrs = {"budget": f"{budget.kind}={budget.value}", "objective": objective, "categories": list(chosen),
             **({} if proxy is None else {"proxy": str(proxy)})}
    study = _study(storage, study_name, _direction(objective), seed, attrs)
    say = progress or (lambda line: log.info("%s", line))
    if study.trials:
        say(f"resuming study {study_name!r}: {len(study.trials)} trials already there")
    started = time.perf_counter()
    run = _Objective(model, score, example_inputs, base, budget, objective, chosen, pm, latency_table)
    study.optimize(run, n_trials=trials, callbacks=[_progress(say, objective, budget, trials)])
    return _result(study, base, budget, objective, study_name, time.perf_counter() - started)


def _result(study: Any, base: PruneConfig, budget: Budget, objective: str, name: str, seconds: float) -> SearchResult:
    import optuna  # noqa: PLC0415

    best = _best(study)
    trials = study.get_trials(deepcopy=False)
    if best is None:
        raise UnreachableTargetError(f"no trial of study {name!r} met the budget {budget.kind}={budget.value} "
                                     f"({len(trials)} trials); run more trials, protect less or lower the budget",
                                     budget)
    ratios = {k[len(PARAM):]: float(v) for k, v in best.params.items() if k.startswith(PARAM)}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    history = [{"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                "ratios": {k[len(PARAM):]: v for k, v in t.params.items()}, **t.user_attrs} for t in trials]
    return SearchResult(_trial_config(base, budget, ratios), objective, float(best.value),
                        dict(best.user_attrs.get("metrics", {})), float(best.user_attrs.get("achieved", 0.0)),
                        best.number, len(complete), len(trials) - len(complete), name, round(seconds, 2), history)
