"""Pruning configuration: a frozen dataclass validated at construction, round-tripping to dict/YAML."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import math
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from modprune.exceptions import ConfigError

__all__ = ["PruneConfig", "SCOPES"]

log = logging.getLogger(__name__)

#: How widely weights/channels are ranked against each other.
SCOPES = ("layer", "category", "global")


def safe_load_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` whose failures, including nesting too deep to parse, are ConfigErrors."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{what} is not valid YAML: {reason}", what) from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to read; flatten it (at most {MAX_DEPTH} levels)",
                          what) from None


def _frozen_mapping(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}: {value!r}", value)
    return types.MappingProxyType(dict(value))


#: Limits that keep extreme values from ending as RecursionError / OverflowError deep inside.
MAX_DEPTH = 16
MAX_INT = 2**63 - 1
MAX_STEPS = 10_000
MAX_ROUND_TO = 2**16


def _check_plain(value: Any, name: str, depth: int = 0) -> None:
    """Option values: YAML scalars, lists and string-keyed mappings, at most ``MAX_DEPTH`` deep,
    integers within 64 bits and finite floats."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"{name} is nested more than {MAX_DEPTH} levels deep; flatten it", name)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{name} keys must be strings, got {key!r} ({type(key).__name__})", key)
            _check_plain(item, f"{name}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{name}[{i}]", depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ConfigError(f"{name} is an integer too large ({len(str(abs(value)))} digits); use a 64-bit value",
                              name)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}", value)
    else:
        raise ConfigError(f"{name} must be a YAML value (number, string, list, mapping), got "
                          f"{type(value).__name__}", value)


def _check_fraction(name: str, value: Any, *, upper_inclusive: bool = False) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{name} must be a number in [0, 1), got an integer of {len(str(abs(value)))} digits", name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}", value)
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ConfigError(f"{name} must be in {bound}, got {value!r}", value)


@dataclass(frozen=True)
class PruneConfig:
    """How to prune a model.

    :param method: pruner name (``unstructured``, ``structured`` or a plugin's).
    :param target: fraction to remove, in [0, 1). What it measures depends on ``target_kind``.
    :param target_kind: what ``target`` measures, one of the pruner's ``target_kinds``:
        ``nonzero`` (unstructured: fraction of nonzero parameters set to zero), ``macs``,
        ``params`` or ``channels`` (structured). ``None``: the pruner's first kind, resolved by
        :func:`modprune.prune` (the report shows the resolved kind).
    :param importance: importance metric name (``l1``, ``l2``, ``l1l2``, ``taylor``, ...).
    :param importance_options: keyword options of the importance (e.g. ``{"alpha": 0.7}``).
    :param category_ratios: relative pruning ratio per module category. They are scaled together
        (keeping their proportions, capped at ``max_ratio``) until ``target`` is reached.
    :param default_ratio: ratio of categories not listed in ``category_ratios``.
    :param protect: categories left untouched (every parameter inside stays bit-identical).
    :param protect_modules: modules left untouched by qualified name (``roi_heads``) or glob pattern
        (``roi_heads.*``, ``backbone.body.layer4*``), everything inside them included. A pattern
        matching no module of the model raises :class:`ConfigError` when pruning. (Plugins protect
        modules by predicate through the ``modprune_protected_modules`` hook.)
    :param scope: ``layer`` (each layer at its category's ratio), ``category`` (rank within a
        category) or ``global`` (one ranking over every unprotected weight or channel).
    :param steps: number of pruning steps to reach the target (iterative schedule).
    :param pruner_options: options of the pruner, validated by it (its ``options_type``):
        ``unstructured``: ``permanent`` (bake the zeros into the weights, True, or keep masks as
        parametrizations that stay applied through fine-tuning, False); ``structured``:
        ``round_to`` (keep channel counts multiples of this), ``attention`` (auto, heads, head_dims,
        protect), ``head_ratio``, ``trace_budget`` (seconds; see docs/api.md).
    :param max_ratio: cap on any single layer's or category's ratio.
    :param seed: seeds random choices (random importance, tie-breaking).
    """

    method: str = "unstructured"
    target: float = 0.1
    target_kind: str | None = None
    importance: str = "l1"
    importance_options: Mapping[str, Any] = field(default_factory=dict)
    category_ratios: Mapping[str, float] = field(default_factory=dict)
    default_ratio: float = 1.0
    protect: tuple[str, ...] = ()
    protect_modules: tuple[str, ...] = ()
    scope: str = "layer"
    steps: int = 1
    pruner_options: Mapping[str, Any] = field(default_factory=dict)
    max_ratio: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("method", "importance"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}", value)
        _check_fraction("target", self.target)
        if self.target_kind is not None and not isinstance(self.target_kind, str):
            raise ConfigError(f"target_kind must be a string, got {self.target_kind!r}", self.target_kind)
        for name in ("importance_options", "pruner_options"):
            object.__setattr__(self, name, _frozen_mapping(getattr(self, name), name))
        _check_plain(self.importance_options, "importance_options")
        _check_plain(self.pruner_options, "pruner_options")
        ratios = _frozen_mapping(self.category_ratios, "category_ratios")
        for category, ratio in ratios.items():
            if not isinstance(category, str) or not category:
                raise ConfigError(f"category_ratios keys must be category names, got {category!r}", category)
            _check_fraction(f"category_ratios[{category!r}]", ratio)
        object.__setattr__(self, "category_ratios", ratios)
        _check_fraction("default_ratio", self.default_ratio, upper_inclusive=True)
        self._check_protect()
        if not isinstance(self.scope, str) or self.scope not in SCOPES:
            raise ConfigError(f"scope {self.scope!r} is not valid; valid: {', '.join(SCOPES)}", self.scope)
        self._check_int("steps", self.steps, minimum=1, maximum=MAX_STEPS)
        self._check_int("seed", self.seed, minimum=0, maximum=MAX_INT)
        _check_fraction("max_ratio", self.max_ratio, upper_inclusive=True)
        if self.max_ratio == 0:
            raise ConfigError("max_ratio must be greater than 0", self.max_ratio)

    def _check_protect(self) -> None:
        protect = () if self.protect is None else self.protect
        if isinstance(protect, str):
            protect = (protect,)
        if not isinstance(protect, (list, tuple)) or not all(isinstance(c, str) for c in protect):
            raise ConfigError(f"protect must be a list of category names, got {self.protect!r}", self.protect)
        object.__setattr__(self, "protect", tuple(protect))
        names = () if self.protect_modules is None else self.protect_modules
        if isinstance(names, str):
            names = (names,)
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError(
                f"protect_modules must be a list of qualified module names or glob patterns, got {self.protect_modules!r}",
                self.protect_modules,
            )
        object.__setattr__(self, "protect_modules", tuple(names))

    def protects_module(self, name: str) -> bool:
        """Whether the module called ``name`` (a qualified name) or one of its parents is in ``protect_modules``."""
        parts = name.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if name else []
        return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes for pattern in self.protect_modules)

    @staticmethod
    def _check_int(name: str, value: Any, *, minimum: int, maximum: int = MAX_INT) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            big = isinstance(value, int) and abs(value) > MAX_INT
            shown = f"an integer of {len(str(abs(value)))} digits" if big else value
            raise ConfigError(f"{name} must be an integer in [{minimum}, {maximum}], got {shown!r}", value)

    def __hash__(self) -> int:  # the mappings are read-only views, which do not hash themselves
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=repr))

    # --- conversion ----------------------------------------------------------------------------

    def ratio_for(self, category: str) -> float:
        """The relative ratio of ``category`` (0 when protected)."""
        if category in self.protect:
            return 0.0
        return float(self.category_ratios.get(category, self.default_ratio))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (YAML/JSON friendly)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneConfig:
        """Build from a dict; unknown keys raise :class:`ConfigError` listing the valid ones.

        The old top-level keys ``permanent`` and ``round_to`` are moved into ``pruner_options``
        with a deprecation warning.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping, got {type(data).__name__}", data)
        data = _migrate(data)
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid), key=str)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(map(str, unknown))}; valid keys: {', '.join(valid)}", unknown)
        kwargs = dict(data)
        for key in ("protect", "protect_modules"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> PruneConfig:
        """Parse YAML text produced by :meth:`to_yaml` (or written by hand)."""
        data = safe_load_yaml(text, "config")

        return cls.from_dict(data or {})


#: Top-level keys of older configs that are pruner options now.
_MOVED_TO_PRUNER_OPTIONS = ("permanent", "round_to")


def _migrate(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with the old top-level pruner keys moved into ``pruner_options`` (warning once per key)."""
    moved = [k for k in _MOVED_TO_PRUNER_OPTIONS if k in data]
    if not moved:
        return data
    options = data.get("pruner_options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"pruner_options must be a mapping, got {type(options).__name__}: {options!r}", options)
    clash = sorted(k for k in moved if k in options)
    if clash:
        raise ConfigError(f"{', '.join(clash)} given both at top level and in pruner_options; keep pruner_options", clash)
    message = (
        f"config keys {', '.join(moved)} at top level are deprecated; put them under pruner_options "
        f"(pruner_options: {{{', '.join(f'{k}: {data[k]!r}' for k in moved)}}})"
    )
    warnings.warn(message, DeprecationWarning, stacklevel=4)
    log.warning("%s", message)
    out = {k: v for k, v in data.items() if k not in moved}
    out["pruner_options"] = {**options, **{k: data[k] for k in moved}}
    return out
