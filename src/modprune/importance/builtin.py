"""Built-in importance metrics, registered like any plugin's."""

from __future__ import annotations

from modprune.hookspecs import hookimpl
from modprune.importance.base import Importance
from modprune.importance.magnitude import L1, L1L2, L2
from modprune.importance.other import BNNext, BNScale, RandomImportance, Taylor


@hookimpl
def modprune_register_importances() -> list[Importance]:
    return [L1(), L2(), L1L2(), RandomImportance(), Taylor(), BNScale(), BNNext()]
