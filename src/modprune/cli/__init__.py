"""The ``modprune`` command line. Each subcommand lives in its own module under ``commands/``."""

from modprune.cli.main import main
from modprune.cli.plugin_commands import Command

__all__ = ["Command", "main"]
