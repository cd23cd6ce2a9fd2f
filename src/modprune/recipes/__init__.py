"""Recipes: named, documented pruning configs, shipped as YAML."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from modprune.config import PruneConfig
from modprune.exceptions import ConfigError

__all__ = ["Recipe", "recipe_from_file", "recipe_from_dict"]


@dataclass(frozen=True)
class Recipe:
    """A named config. ``source`` is the file it came from, if any."""

    name: str
    description: str
    config: PruneConfig
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "config": self.config.to_dict()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


_RECIPE_KEYS = ("name", "description", "config")


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
    return Recipe(name, description, config, source)


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
