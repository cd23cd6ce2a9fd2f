"""The ``modprune`` command line. Each subcommand lives in its own module under ``commands/``."""

from modprune.cli.main import main

__all__ = ["main"]
