"""Entry point: argument parsing, logging set-up and the error-to-exit-code policy.

Exit codes: 0 success, 2 user error (a :class:`ModpruneError`: bad input, one readable line),
1 internal error (one line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import logging
import pkgutil
import re
import sys
from typing import Sequence

from modprune.cli.examples import add_examples
from modprune.cli.plugin_commands import add_plugin_commands, remove_subparser
from modprune.exceptions import ModpruneError
from modprune.optional import EXTRAS, missing_dependency_error
from modprune.plugins import ModpruneManager, resolve

__all__ = ["main", "build_parser", "COMMANDS"]

#: Subcommand modules, in help order; each has ``add_parser(subparsers)`` setting ``func``.
#: Any other module in ``modprune.cli.commands`` is added after these.
COMMANDS = ("demo", "prune", "inspect", "compare", "finetune", "data", "plugins", "recipes")

log = logging.getLogger("modprune.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: exit 2, one line
        self.exit(2, f"modprune: error: {message} (see --help)\n")


def build_parser(pm: ModpruneManager | None = None) -> argparse.ArgumentParser:
    """The ``modprune`` parser: the built-in commands, then those of the plugins in ``pm`` (default:
    the default plugin manager, built here on first use and reused by the command)."""
    parser = _Parser(prog="modprune", description="Prune PyTorch detection models.")
    _add_global_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _command_modules():
        try:
            importlib.import_module(f"modprune.cli.commands.{name}").add_parser(sub)
        except Exception as exc:  # one broken command must not take the others down
            _add_broken(sub, name, exc)
    for name, child in sub.choices.items():
        add_examples(child, name)
        _add_global_args(child, suppress=True)  # `modprune prune ... --debug` works too
    add_plugin_commands(sub, resolve(pm))
    return parser


def _add_global_args(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """``--debug`` and ``-q``; on a subcommand (``suppress``) they default to the global option's value."""
    default = {"default": argparse.SUPPRESS} if suppress else {}
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs", **default)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors", **default)


def _configure_logging(argv: Sequence[str]) -> None:
    """Set up logging from the global options (before or after the command) before anything logs.

    INFO progress lines go to stderr by default; ``-q`` keeps warnings and errors, ``--debug`` adds
    debug lines (temporary paths and the like)."""
    options = list(itertools.takewhile(lambda a: a != "--", argv))
    args = argparse.Namespace(debug="--debug" in options, quiet="-q" in options or "--quiet" in options)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _add_broken(sub: argparse._SubParsersAction, name: str, error: Exception) -> None:
    """A stand-in for a command whose module failed to import: running it reports the failure."""
    remove_subparser(sub, name)  # the module may have failed after adding its parser
    p = sub.add_parser(name, help=f"(unavailable: {type(error).__name__})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(_args: argparse.Namespace) -> int:
        raise RuntimeError(f"command {name!r} failed to load: {type(error).__name__}: {error}") from error

    p.set_defaults(func=run)


def _command_modules() -> list[str]:
    from modprune.cli import commands

    found = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    return [n for n in COMMANDS if n in found] + sorted(found - set(COMMANDS))


def _offline_ultralytics() -> None:
    """Before any plugin imports ultralytics: no update checks, font downloads or auto-installs."""
    if importlib.util.find_spec("ultralytics") is not None:
        from modprune.integrations.ultralytics.offline import ensure_offline

        ensure_offline()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _offline_ultralytics()
    try:
        return int(args.func(args) or 0)
    except ModpruneError as exc:
        if args.debug:
            raise
        print(f"modprune: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modprune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is our bug: one line, traceback with --debug
        if args.debug:
            raise
        if (disk := _disk_error(exc)) is not None:  # a full or read-only disk anywhere: the user's to fix
            print(f"modprune: error: {_one_line(disk)}", file=sys.stderr)
            return 2
        top = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
        if top in EXTRAS:  # an optional dependency that is not installed: say which extra to install
            print(f"modprune: error: {missing_dependency_error(top, f'modprune {args.command}')}", file=sys.stderr)
            return 2
        print(
            f"modprune: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


def _disk_error(exc: BaseException) -> ModpruneError | None:
    from modprune.outputs import disk_error

    return disk_error(exc)


def _one_line(exc: BaseException) -> str:
    """The message on one line (some libraries put newlines and ANSI codes in theirs)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    return " ".join(text.split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
