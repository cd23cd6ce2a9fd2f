"""Recipes: named, documented pruning configs, shipped as YAML."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from modprune.config import PruneConfig, _frozen_mapping
from modprune.exceptions import ConfigError

__all__ = ["FINETUNE_KEYS", "Recipe", "recipe_from_file", "recipe_from_dict"]

#: The fine-tuning settings a recipe may recommend (``FinetuneOptions`` fields of the same names).
FINETUNE_KEYS = ("optimizer", "lr0", "distill_weight", "nominal_batch")


@dataclass(frozen=True)
class Recipe:
    """A named config. ``source`` is the file it came from, if any.

    ``finetune`` holds the fine-tuning settings the recipe was measured with, for the fine-tuning that
    follows the prune (keys in :data:`FINETUNE_KEYS`, e.g. ``{"optimizer": "SGD", "lr0": 0.02}``): the
    CLI's fine-tuning after ``modprune prune --recipe`` uses them, and from Python they go straight into
    ``FinetuneOptions(..., **recipe.finetune)``. Empty: ``FinetuneOptions``' own defaults.
    """

    name: str
    description: str
    config: PruneConfig
    source: str = ""
    finetune: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "finetune", _frozen_mapping(self.finetune, f"recipe {self.name!r}: finetune"))
        _check_finetune(self.finetune, self.name)

    def __hash__(self) -> int:
        return hash((self.name, self.description, self.config, self.source, tuple(sorted(self.finetune.items()))))

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description, "config": self.config.to_dict()}
        if self.finetune:
            out["finetune"] = dict(self.finetune)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


_RECIPE_KEYS = ("name", "description", "config", "finetune")


def _check_finetune(finetune: Mapping[str, Any], name: str) -> None:
    """Raise ConfigError for a ``finetune`` section with unknown or ill-typed settings."""
    unknown = sorted(set(finetune) - set(FINETUNE_KEYS), key=str)
    if unknown:
        raise ConfigError(f"recipe {name!r}: unknown finetune keys {unknown}; valid: {', '.join(FINETUNE_KEYS)}",
                          unknown)
    optimizer = finetune.get("optimizer", "auto")
    if not isinstance(optimizer, str) or not optimizer:
        raise ConfigError(f"recipe {name!r}: finetune optimizer must be an ultralytics optimizer name, got "
                          f"{optimizer!r}", optimizer)
    for key in ("lr0", "distill_weight"):
        value = finetune.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not (value > 0 and math.isfinite(value))):
            raise ConfigError(f"recipe {name!r}: finetune {key} must be a positive number, got {value!r}", value)
    nominal = finetune.get("nominal_batch")
    if nominal is not None and (isinstance(nominal, bool) or not isinstance(nominal, int) or nominal < 1):
        raise ConfigError(f"recipe {name!r}: finetune nominal_batch must be an integer >= 1, got {nominal!r}",
                          nominal)
    if finetune.get("lr0") is not None and optimizer.lower() == "auto":
        raise ConfigError(f"recipe {name!r}: finetune lr0 needs an optimizer other than 'auto' (which picks its own "
                          "rate)", finetune)


def recipe_from_dict(data: Mapping[str, Any], *, source: str = "") -> Recipe:
    """Build a recipe from ``{name, description, config: {...}}``; a bare config mapping also works."""
    where = f" in {source}" if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a recipe must be a mapping{where}, got {type(data).__name__}", data)
    if "config" not in data:  # a bare PruneConfig mapping
        name = Path(source).stem if source else "custom"
        return Recipe(name, "", PruneConfig.from_dict(data), source)
    unknown = sorted(set(data) - set(_RECIPE_KEYS), key=str)
    if unknown:
        raise ConfigError(f"unknown recipe keys{where}: {unknown}; valid: {', '.join(_RECIPE_KEYS)}", unknown)
    name = data.get("name") or (Path(source).stem if source else "")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"recipe name must be a non-empty string{where}", name)
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"recipe description must be a string{where}", description)
    try:
        config = PruneConfig.from_dict(data["config"] or {})
    except ConfigError as exc:
        raise ConfigError(f"recipe {name!r}{where}: {exc}", exc.obj) from None
    finetune = data.get("finetune")
    return Recipe(name, description, config, source, {} if finetune is None else finetune)


def recipe_from_file(path: str | os.PathLike[str]) -> Recipe:
    """Read a recipe YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {str(path)!r} does not exist or is not a file", str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"recipe file {str(path)!r} is not valid YAML: {reason}", str(path)) from None
    except RecursionError:
        raise ConfigError(f"recipe file {str(path)!r} is nested too deeply to read; flatten it", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"recipe file {str(path)!r} cannot be read: {exc.strerror or exc}", str(path)) from None
    return recipe_from_dict(data, source=str(path))
