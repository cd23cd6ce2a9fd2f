"""Importance metrics: how much each weight or channel matters."""

from modprune.importance.base import CHANNELS, WEIGHTS, Importance, ScoreContext

__all__ = ["CHANNELS", "WEIGHTS", "Importance", "ScoreContext"]
