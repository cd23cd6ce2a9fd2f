"""Subcommands added by plugins (``modprune_register_commands``): listed, run, and skipped when broken.

These run ``main()`` in-process with the default plugin manager replaced, so they use this tree's copy
of the test plugin (loaded from its file) rather than whichever copy is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path

import pytest
from torch import nn

import modprune
import modprune.plugins
from modprune.cli import Command
from modprune.cli.main import build_parser
from modprune.exceptions import ConfigError, ModpruneError

cli_main = importlib.import_module("modprune.cli.main")  # the module (modprune.cli.main is also a function)

PLUGIN_FILE = Path(__file__).parents[1] / "third_party_plugin" / "src" / "modprune_test_plugin" / "__init__.py"
PLUGIN_MODULE = "modprune_test_plugin_tree"


@pytest.fixture()
def tree_plugin(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """This tree's test plugin, imported from its file under a name of its own."""
    spec = importlib.util.spec_from_file_location(PLUGIN_MODULE, PLUGIN_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, PLUGIN_MODULE, module)  # pickled classes are looked up by module
    spec.loader.exec_module(module)
    return module


def use_plugins(monkeypatch: pytest.MonkeyPatch, *plugins: object) -> modprune.ModpruneManager:
    """Make the CLI's default plugin manager the built-ins plus ``plugins`` (no entry points)."""
    pm = modprune.get_plugin_manager(entry_points=False, plugins=plugins)
    monkeypatch.setattr(modprune.plugins, "_default", [pm])
    return pm


def command_plugin(*commands: Command) -> object:
    class Plugin:
        @modprune.hookimpl
        def modprune_register_commands(self) -> list[Command]:
            return list(commands)

    return Plugin()


def help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps help lines


def test_the_hook_collects_commands(tree_plugin: types.ModuleType) -> None:
    pm = modprune.get_plugin_manager(entry_points=False, plugins=[tree_plugin])
    found = pm.collect("modprune_register_commands", Command)
    assert [(plugin, c.name) for plugin, c in found] == [(PLUGIN_MODULE, "se-blocks")]


def test_a_plugin_command_is_listed_and_runs(tree_plugin: types.ModuleType, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    use_plugins(monkeypatch, tree_plugin)
    text = help_text(capsys)
    assert "se-blocks" in text and f"(plugin {PLUGIN_MODULE})" in text
    model = nn.Sequential(nn.Conv2d(3, 8, 1), tree_plugin.SqueezeExcite(8), nn.Conv2d(8, 4, 1),
                          tree_plugin.SqueezeExcite(4))
    modprune.save(model, tmp_path / "se.pt")
    assert cli_main.main(["se-blocks", str(tmp_path / "se.pt")]) == 0
    assert capsys.readouterr().out.splitlines() == ["1: 8 channels", "3: 4 channels", "2 squeeze-excite blocks"]
    # the plugin's command gets the CLI's error policy: a missing file is one line, exit 2
    assert cli_main.main(["se-blocks", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modprune: error:") and "missing.pt" in err and err.count("\n") == 1


def test_a_broken_command_hook_is_named_and_skipped(tree_plugin: types.ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    class Broken:
        @modprune.hookimpl
        def modprune_register_commands(self) -> list[Command]:
            raise RuntimeError("no commands today")

    pm = use_plugins(monkeypatch, Broken(), tree_plugin)
    with caplog.at_level(logging.WARNING, logger="modprune"):
        parser = build_parser(pm)
    sub = next(a for a in parser._actions if a.choices and "prune" in a.choices)
    assert "se-blocks" in sub.choices  # the other plugin's command is still there
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "Broken" in warning and "no commands today" in warning
    assert "Broken" in pm.failed_plugins
    assert cli_main.main(["recipes"]) == 0  # and the CLI works


def test_a_broken_command_hook_raises_under_strict() -> None:
    class Broken:
        @modprune.hookimpl
        def modprune_register_commands(self) -> list[Command]:
            raise RuntimeError("no commands today")

    pm = modprune.get_plugin_manager(entry_points=False, plugins=[Broken()], strict=True)
    with pytest.raises(ModpruneError, match="no commands today"):
        build_parser(pm)


def test_wrong_items_clashes_and_failing_arguments_are_skipped(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    def bad_arguments(parser: object) -> None:
        raise TypeError("bad option")

    ran: list[str] = []
    clash = Command("prune", "a second prune", run=lambda args: ran.append("clash"))
    broken = Command("broken-args", "fails to add its options", run=lambda args: 0, add_arguments=bad_arguments)
    good = Command("hello", "say hello", run=lambda args: ran.append(args.who) or 0,
                   add_arguments=lambda p: p.add_argument("--who", default="world"))

    class Wrong:
        @modprune.hookimpl
        def modprune_register_commands(self) -> list[object]:
            return [{"name": "dict-command"}]

    use_plugins(monkeypatch, command_plugin(clash, broken, good), Wrong())
    with caplog.at_level(logging.WARNING, logger="modprune"):
        text = help_text(capsys)
    assert "hello" in text and "broken-args" not in text and "a second prune" not in text
    warnings = [r.getMessage() for r in caplog.records]
    assert any("'prune' is already defined" in w for w in warnings), warnings
    assert any("broken-args" in w and "bad option" in w for w in warnings), warnings
    assert any("dict-command" in w and "not a Command" in w for w in warnings), warnings
    assert cli_main.main(["hello", "--who", "plugins"]) == 0 and ran == ["plugins"]
    with pytest.raises(SystemExit) as exc:  # not a command: argparse's usage error
        cli_main.main(["broken-args"])
    assert exc.value.code == 2 and "invalid choice: 'broken-args'" in capsys.readouterr().err


def test_a_failing_plugin_command_is_one_line_naming_the_plugin(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    def user_error(args: object) -> int:
        raise ConfigError("bad input, do this instead")

    def bug(args: object) -> int:
        raise ValueError("oops")

    plugin = command_plugin(Command("user-error", "fails", run=user_error), Command("bug", "crashes", run=bug))
    use_plugins(monkeypatch, plugin)
    assert cli_main.main(["user-error"]) == 2
    assert capsys.readouterr().err == "modprune: error: bad input, do this instead\n"
    assert cli_main.main(["bug"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'bug'" in err and "Plugin" in err and "ValueError: oops" in err


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "Bad Name", "help": "h", "run": print},
        {"name": "", "help": "h", "run": print},
        {"name": "ok", "help": 3, "run": print},
        {"name": "ok", "help": "h", "run": "not callable"},
        {"name": "ok", "help": "h", "run": print, "add_arguments": "not callable"},
    ],
)
def test_command_is_validated(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Command(**kwargs)
