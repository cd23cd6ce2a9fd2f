"""Built-in recipes (the YAML files in this folder), registered like any plugin's."""

from __future__ import annotations

from pathlib import Path

from modprune.hookspecs import hookimpl
from modprune.recipes import Recipe, recipe_from_file

_HERE = Path(__file__).parent


@hookimpl
def modprune_register_recipes() -> list[Recipe]:
    return [recipe_from_file(p) for p in sorted(_HERE.glob("*.yaml"))]
