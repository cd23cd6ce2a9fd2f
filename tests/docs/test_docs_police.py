"""The docs list everything there is: every hookspec in docs/plugins.md with its signature, every CLI
command and option in docs/cli.md. Both lists are derived from the code, so a new hook or command
fails here until it is documented."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytest

from modprune import hookspecs
from modprune.cli.main import build_parser
from modprune.plugins import get_plugin_manager

DOCS = Path(__file__).resolve().parents[2] / "docs"
PLUGINS_DOC = DOCS / "plugins.md"
CLI_DOC = DOCS / "cli.md"


# --- hooks ------------------------------------------------------------------------------------


def _hookspecs() -> dict[str, tuple[str, bool]]:
    """``name -> (documented signature, firstresult)`` of every hookspec."""
    found = {}
    for name, func in vars(hookspecs).items():
        options = getattr(func, f"{hookspecs.PROJECT_NAME}_spec", None)
        if name.startswith("modprune_") and options is not None:
            params = ", ".join(inspect.signature(func).parameters)
            found[name] = (f"{name}({params})", bool(options.get("firstresult")))
    return found


def _hook_sections() -> dict[str, str]:
    """``signature -> text`` of every hook heading (``#### `modprune_x(a, b)```) in docs/plugins.md."""
    text = PLUGINS_DOC.read_text(encoding="utf-8")
    parts = re.split(r"^#{2,4} `(modprune_\w+\([^)]*\))`\s*$", text, flags=re.M)
    return {parts[i]: re.split(r"^#{1,4} ", parts[i + 1], flags=re.M)[0] for i in range(1, len(parts), 2)}


def test_hookspecs_are_found() -> None:
    specs = _hookspecs()
    assert "modprune_load_model" in specs and specs["modprune_load_model"] == ("modprune_load_model(path, trust_pickle)", True)
    assert len(specs) >= 12


@pytest.mark.parametrize("name", sorted(_hookspecs()))
def test_every_hook_is_documented_with_its_signature(name: str) -> None:
    signature, firstresult = _hookspecs()[name]
    sections = _hook_sections()
    assert signature in sections, f"docs/plugins.md has no heading `{signature}` (hook reference)"
    body = sections[signature]
    assert len(body.split()) >= 5, f"docs/plugins.md: `{signature}` needs a short description"
    says_first = "first non-none result" in " ".join(body.lower().split())
    assert says_first == firstresult, f"docs/plugins.md: `{signature}` must say 'first non-None result' iff firstresult"


def test_documented_hooks_exist() -> None:
    documented = set(_hook_sections())
    real = {signature for signature, _ in _hookspecs().values()}
    assert documented - real == set(), "docs/plugins.md documents hooks (or signatures) that do not exist"


def test_hook_table_names_only_real_hooks() -> None:
    rows = [line for line in PLUGINS_DOC.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    mentioned = set(re.findall(r"`(modprune_\w+)`", "\n".join(rows)))
    assert mentioned
    assert mentioned - set(_hookspecs()) == set()


def test_surgery_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PLUGINS_DOC.read_text(encoding="utf-8"), flags=re.S)
    [example] = [b for b in blocks if "modprune.surgery" in b]
    exec(compile(example, str(PLUGINS_DOC), "exec"), {})  # noqa: S102 - our own docs


# --- CLI --------------------------------------------------------------------------------------


def _builtin_parser() -> argparse.ArgumentParser:
    """modprune's own commands: third-party plugins' commands are documented by their plugins."""
    return build_parser(get_plugin_manager(entry_points=False))


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """``"data synth" -> long options`` of every (sub)command, nested ones included."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                key = " ".join(path + (name,))
                found[key] = [o for a in sub._actions for o in a.option_strings
                              if o.startswith("--") and o not in ("--help", "--debug", "--quiet")]  # global ones: own test
                found.update(_commands(sub, path + (name,)))
    return found


def _command_sections() -> dict[str, str]:
    """``"data synth" -> text`` of every ``### `modprune data synth``` heading in docs/cli.md."""
    parts = re.split(r"^#{2,4} `modprune ([a-z0-9 -]+)`\s*$", CLI_DOC.read_text(encoding="utf-8"), flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_commands_are_found() -> None:
    commands = _commands(_builtin_parser())
    assert {"prune", "data", "data synth", "data check"} <= set(commands)
    assert "--recipe" in commands["prune"]


@pytest.mark.parametrize("command", sorted(_commands(_builtin_parser())))
def test_every_command_and_option_is_documented(command: str) -> None:
    sections = _command_sections()
    assert command in sections, f"docs/cli.md has no heading `modprune {command}`"
    body = sections[command]
    assert body.strip(), f"docs/cli.md: `modprune {command}` needs a description"
    missing = [o for o in _commands(_builtin_parser())[command] if not re.search(rf"`{re.escape(o)}[` ]", body)]
    assert not missing, f"docs/cli.md: `modprune {command}` does not document {missing}"


def test_documented_commands_exist() -> None:
    assert set(_command_sections()) - set(_commands(_builtin_parser())) == set()


def test_global_options_are_documented() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    options = [o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert options and [o for o in options if o not in text] == []
