"""Subcommands contributed by plugins through ``modprune_register_commands``.

A plugin returns :class:`Command` objects; the CLI adds each as a subcommand after the built-in
ones. The core never names a plugin: everything here comes from the plugin manager.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from modprune.exceptions import ConfigError, ModpruneError

if TYPE_CHECKING:  # pragma: no cover
    from modprune.plugins import ModpruneManager

__all__ = ["Command", "add_plugin_commands"]

log = logging.getLogger(__name__)

HOOK = "modprune_register_commands"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Command:
    """One ``modprune NAME ...`` subcommand offered by a plugin.

    :param name: the subcommand (lower case letters, digits, ``-`` and ``_``).
    :param help: one line for ``modprune --help``.
    :param run: called with the parsed arguments; returns the exit code (None means 0). Raise a
        :class:`modprune.ModpruneError` for a user error (exit 2, one line).
    :param add_arguments: adds the command's options to its ``argparse`` parser (may add sub-parsers).
    :param description: longer text for ``modprune NAME --help`` (default: ``help``).
    :raises ConfigError: a field has the wrong type or the name is not a valid command name.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], int | None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"command name {self.name!r} must be lower case letters, digits, '-' or '_'", self.name)
        if not isinstance(self.help, str) or not isinstance(self.description, str):
            raise ConfigError(f"command {self.name!r}: help and description must be strings", self)
        if not callable(self.run):
            raise ConfigError(f"command {self.name!r}: run must be callable, got {self.run!r}", self.run)
        if self.add_arguments is not None and not callable(self.add_arguments):
            raise ConfigError(f"command {self.name!r}: add_arguments must be callable or None", self.add_arguments)


def add_plugin_commands(sub: argparse._SubParsersAction, pm: ModpruneManager) -> list[str]:
    """Add every plugin command to ``sub``; return the names added.

    A name already taken is skipped with a warning, and so is a command whose ``add_arguments``
    raises (a hook that raises is skipped by the plugin manager, also with a warning).
    """
    added: list[str] = []
    for plugin_name, command in pm.collect(HOOK, Command):
        if command.name in sub.choices:
            log.warning("plugin %s: command %r is already defined; skipping the plugin's", plugin_name, command.name)
            continue
        parser = sub.add_parser(command.name, help=f"{command.help} (plugin {plugin_name})",
                                description=command.description or command.help)
        try:
            if command.add_arguments is not None:
                command.add_arguments(parser)
        except Exception as exc:  # a third-party plugin may fail in any way
            remove_subparser(sub, command.name)
            log.warning("plugin %s: command %r could not add its arguments (%s: %s); skipping it",
                        plugin_name, command.name, type(exc).__name__, exc)
            continue
        parser.set_defaults(func=_runner(plugin_name, command))
        added.append(command.name)
    return added


def remove_subparser(sub: argparse._SubParsersAction, name: str) -> None:
    """Take subcommand ``name`` out of ``sub`` (its parser and its ``--help`` line)."""
    sub.choices.pop(name, None)
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != name]


def _runner(plugin_name: str, command: Command) -> Callable[[argparse.Namespace], int | None]:
    """``command.run``, with errors other than user errors named after the plugin."""

    def run(args: argparse.Namespace) -> int | None:
        try:
            return command.run(args)
        except ModpruneError:
            raise
        except Exception as exc:
            raise RuntimeError(
                f"command {command.name!r} of plugin {plugin_name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc

    return run
