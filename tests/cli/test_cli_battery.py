"""Every ``modprune`` command, fed what users get wrong: one readable line, exit 2 (or 1), nothing written.

The commands are discovered from the parser (the same one ``modprune --help`` prints), so commands added
later are covered by the generic cases automatically: unknown options, missing arguments, and bad files
for any positional argument named like an input file (``model``, ``models``, ``data``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from modprune.cli.main import build_parser

Runner = Callable[..., Any]  # the run_cli / run_real fixtures (tests/cli/conftest.py)
Result = Any  # their result: .rc, .stdout, .stderr, .stderr_lines

TRACEBACK = "Traceback (most recent call last)"


# --- discover the commands -----------------------------------------------------------------


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    seen: set[int] = set()
    for action in subs:
        for name, sub in action.choices.items():
            if id(sub) not in seen:
                seen.add(id(sub))
                yield from leaf_commands(sub, (*path, name))


PARSER = build_parser()
COMMANDS = dict(leaf_commands(PARSER))
TOP_LEVEL = sorted({path[0] for path in COMMANDS})


def required_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.required]


def cmd_id(path: tuple[str, ...]) -> str:
    return "-".join(path)


# --- checks every failure must pass ----------------------------------------------------------


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def assert_clean_failure(result: Result, *, names: tuple[str, ...] = (), codes: tuple[int, ...] = (2,)) -> str:
    """Exit code in ``codes``, exactly one error line on stderr (besides INFO progress lines before it),
    naming the problem, no traceback."""
    assert result.rc in codes, (result.rc, result.stderr)
    assert TRACEBACK not in result.stderr, result.stderr
    lines = [line for line in result.stderr_lines if not line.startswith("INFO ")]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("modprune: "), line
    assert len(line) < 600, line
    for name in names:
        assert name.lower() in line.lower(), f"{name!r} not in {line!r}"
    return line


def run_failing(run_cli: Runner, workdir: Path, *argv: str, names: tuple[str, ...] = (), codes: tuple[int, ...] = (2,)) -> str:
    before = tree(workdir)
    result = run_cli(*argv, cwd=workdir)
    line = assert_clean_failure(result, names=names, codes=codes)
    assert tree(workdir) == before, "a failing command wrote or changed files"
    return line


# --- generic cases, for every command ------------------------------------------------------


def test_help_lists_every_command(run_cli: Runner, tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.rc == 0
    for name in TOP_LEVEL:
        assert re.search(rf"^\s+{re.escape(name)}\s", result.stdout, re.M), name
    assert {"prune", "inspect", "plugins", "recipes"} <= set(TOP_LEVEL)


@pytest.mark.parametrize("path", list(COMMANDS), ids=cmd_id)
def test_unknown_option(path: tuple[str, ...], run_cli: Runner, workdir: Path) -> None:
    # argparse reports missing required arguments before unrecognised ones
    names = ("required",) if required_actions(COMMANDS[path]) else ("--no-such-option",)
    run_failing(run_cli, workdir, *path, "--no-such-option", names=names)
    if path in TEMPLATES:
        argv = [a.replace("{file}", "model.pt") for a in TEMPLATES[path]]
        run_failing(run_cli, workdir, *argv, "--no-such-option", names=("--no-such-option",))


@pytest.mark.parametrize("path", [p for p, parser in COMMANDS.items() if required_actions(parser)], ids=cmd_id)
def test_missing_arguments(path: tuple[str, ...], run_cli: Runner, workdir: Path) -> None:
    run_failing(run_cli, workdir, *path, names=("required",))


def test_no_command(run_cli: Runner, workdir: Path) -> None:
    run_failing(run_cli, workdir, names=("command",))
    run_failing(run_cli, workdir, "no-such-command", names=("no-such-command",))


BAD_MODELS = {
    "missing": "missing.pt",
    "folder": "folder",
    "truncated": "truncated.pt",
    "corrupt": "corrupt.pt",
    "empty": "empty.pt",
    "png": "image.png",
    "png-named-pt": "image.pt",
    "yaml-list": "list.yaml",
    "yaml-wrong-shape": "wrong_shape.yaml",
    "needs-trust": "custom.pt",
}
BAD_DATA = {"missing": "missing.yaml", "folder": "folder", "png": "image.png", "yaml-list": "list.yaml", "bad-yaml": "bad_yaml.yaml"}
#: Positional arguments that name input files, and what to feed them.
FILE_ARGS = {"model": BAD_MODELS, "models": BAD_MODELS, "data": BAD_DATA}
#: Valid values for the other required arguments of known commands ({file} is the bad file).
TEMPLATES = {
    ("prune",): ["prune", "{file}", "--recipe", "unstructured-10", "-o", "out.pt", "--imgsz", "32"],
    ("inspect",): ["inspect", "{file}", "--imgsz", "32"],
}


def file_cases() -> Iterator[tuple[tuple[str, ...], list[str], str, str]]:
    for path, parser in COMMANDS.items():
        required = required_actions(parser)
        file_args = [a for a in required if not a.option_strings and a.dest in FILE_ARGS]
        if not file_args:
            continue
        if path in TEMPLATES:
            argv = TEMPLATES[path]
        elif all(not a.option_strings and a.dest in FILE_ARGS for a in required):
            argv = [*path, *("{file}" for _ in required)]
        else:
            continue  # other required options we cannot fill in generically
        for kind, name in FILE_ARGS[file_args[0].dest].items():
            yield path, argv, kind, name


FILE_CASES = list(file_cases())


def test_file_cases_cover_prune_and_inspect() -> None:
    covered = {path for path, *_ in FILE_CASES}
    assert {("prune",), ("inspect",)} <= covered


@pytest.mark.parametrize(("path", "argv", "kind", "name"), FILE_CASES, ids=[f"{cmd_id(c[0])}-{c[2]}" for c in FILE_CASES])
def test_bad_input_files(path: tuple[str, ...], argv: list[str], kind: str, name: str, run_cli: Runner, workdir: Path) -> None:
    line = run_failing(run_cli, workdir, *[a.replace("{file}", name) for a in argv], names=(name,), codes=(1, 2))
    if path in TEMPLATES:
        assert line.startswith("modprune: error:"), line  # a user error, not an internal one


# --- prune ---------------------------------------------------------------------------------

PRUNE = ("prune", "model.pt", "--imgsz", "32")

PRUNE_CASES = {
    "recipe-missing": (["--recipe", "missing.yaml", "-o", "out.pt"], ("missing.yaml", "does not exist")),
    "recipe-folder": (["--recipe", "folder/", "-o", "out.pt"], ("folder", "not a file")),
    "recipe-png": (["--recipe", "image.png", "-o", "out.pt"], ("image.png", "yaml")),
    "recipe-png-named-yaml": (["--recipe", "image.yaml", "-o", "out.pt"], ("image.yaml", "yaml")),
    "recipe-bad-yaml": (["--recipe", "bad_yaml.yaml", "-o", "out.pt"], ("bad_yaml.yaml", "yaml")),
    "recipe-list": (["--recipe", "list.yaml", "-o", "out.pt"], ("list.yaml", "mapping")),
    "recipe-wrong-shape": (["--recipe", "wrong_shape.yaml", "-o", "out.pt"], ("wrong_shape.yaml", "mapping")),
    "recipe-wrong-type": (["--recipe", "wrong_type.yaml", "-o", "out.pt"], ("target", "high")),
    "recipe-wrong-value": (["--recipe", "wrong_value.yaml", "-o", "out.pt"], ("target", "1.5")),
    "recipe-wrong-steps": (["--recipe", "wrong_steps.yaml", "-o", "out.pt"], ("steps",)),
    "recipe-unknown-key": (["--recipe", "unknown_key.yaml", "-o", "out.pt"], ("tagret", "valid keys")),
    "recipe-unknown-importance": (["--recipe", "unknown_importance.yaml", "-o", "out.pt"], ("l7", "l1l2")),
    "recipe-unknown-category": (["--recipe", "unknown_category.yaml", "-o", "out.pt"], ("convs", "depthwise_conv")),
    "recipe-unknown-name": (["--recipe", "nope", "-o", "out.pt"], ("unknown recipe 'nope'", "unstructured-10")),
    "unreachable": (["--recipe", "unreachable.yaml", "-o", "out.pt"], ("unreachable", "protect")),
    "target-too-big": (["--recipe", "unstructured-10", "--target", "1.5", "-o", "out.pt"], ("target", "1.5")),
    "target-nan": (["--recipe", "unstructured-10", "--target", "nan", "-o", "out.pt"], ("target",)),
    "target-not-a-number": (["--recipe", "unstructured-10", "--target", "lots", "-o", "out.pt"], ("--target", "lots")),
    "imgsz-zero": (["--recipe", "unstructured-10", "-o", "out.pt", "--imgsz", "0"], ("--imgsz",)),
    "output-unwritable": (["--recipe", "unstructured-10", "-o", "/proc/modprune-out.pt"], ("/proc", "not writable")),
    "output-dir-missing": (["--recipe", "unstructured-10", "-o", "nowhere/out.pt"], ("nowhere", "does not exist")),
    "output-parent-is-file": (["--recipe", "unstructured-10", "-o", "ok.yaml/out.pt"], ("ok.yaml",)),
    "output-is-folder": (["--recipe", "unstructured-10", "-o", "folder"], ("folder", "directory")),
    "output-is-input": (["--recipe", "unstructured-10", "-o", "model.pt"], ("model.pt", "input")),
    "output-is-input-other-spelling": (["--recipe", "unstructured-10", "-o", "./folder/../model.pt"], ("input",)),
    "output-exists": (["--recipe", "unstructured-10", "-o", "linear.pt"], ("linear.pt", "--force")),
    "report-is-output": (["--recipe", "unstructured-10", "-o", "out.pt", "--report-json", "out.pt"], ("report-json",)),
    "report-is-input": (["--recipe", "unstructured-10", "-o", "out.pt", "--report-json", "model.pt"], ("model.pt",)),
    "report-exists": (["--recipe", "unstructured-10", "-o", "out.pt", "--report-json", "ok.yaml"], ("ok.yaml", "exists")),
    "report-unwritable": (["--recipe", "unstructured-10", "-o", "out.pt", "--report-json", "/proc/r.json"], ("/proc",)),
}


@pytest.mark.parametrize("case", list(PRUNE_CASES))
def test_prune_refuses(case: str, run_cli: Runner, workdir: Path) -> None:
    if case.endswith("unwritable") and not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc as an unwritable location")
    extra, names = PRUNE_CASES[case]
    argv = [*PRUNE, *extra]
    if case == "imgsz-zero":
        argv = ["prune", "model.pt", *extra]
    run_failing(run_cli, workdir, *argv, names=names)


@pytest.mark.parametrize(
    ("model", "names"),
    [("linear.pt", ("forward failed", "(1, 3, 32, 32)")), ("custom.pt", ("custom.pt", "trust"))],
)
def test_prune_refuses_models_it_cannot_use(model: str, names: tuple[str, ...], run_cli: Runner, workdir: Path) -> None:
    run_failing(run_cli, workdir, "prune", model, "--recipe", "unstructured-10", "-o", "out.pt", "--imgsz", "32", names=names)


def test_debug_shows_the_traceback(run_cli: Runner, workdir: Path) -> None:
    before = tree(workdir)
    result = run_cli("--debug", *PRUNE, "--recipe", "unreachable.yaml", "-o", "out.pt", cwd=workdir)
    assert result.rc == 1 and TRACEBACK in result.stderr and "UnreachableTargetError" in result.stderr
    assert tree(workdir) == before


def test_recipes_show_unknown(run_cli: Runner, workdir: Path) -> None:
    run_failing(run_cli, workdir, "recipes", "--show", "nope", names=("nope", "unstructured-10"))


# --- happy paths ---------------------------------------------------------------------------


def test_prune_then_inspect(run_cli: Runner, workdir: Path) -> None:
    result = run_cli(*PRUNE, "--recipe", "unstructured-10", "-o", "out.pt", "--report-json", "report.json", cwd=workdir)
    assert result.rc == 0, result.stderr
    assert TRACEBACK not in result.stderr and "achieved 0.1" in result.stdout and "wrote out.pt" in result.stdout
    report = json.loads((workdir / "report.json").read_text())
    assert abs(report["achieved"] - 0.1) <= 0.001 and report["macs_before"] > 0
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]  # no temp files left
    result = run_cli("inspect", "out.pt", "--imgsz", "32", cwd=workdir)
    assert result.rc == 0, result.stderr
    assert re.search(r"^conv\s+\d+", result.stdout, re.M) and "depthwise_conv" in result.stdout
    assert "MACs@32" in result.stdout and "zeros" in result.stdout


def test_prune_with_a_recipe_file_and_a_target(run_cli: Runner, workdir: Path) -> None:
    result = run_cli(*PRUNE, "--recipe", "ok.yaml", "--target", "0.25", "-o", "out.pt", cwd=workdir)
    assert result.rc == 0, result.stderr
    assert "target 0.250" in result.stdout


def test_force_never_replaces_the_input(run_cli: Runner, workdir: Path) -> None:
    """Outputs never land on inputs, not even with --force (issue 15): exit 2, one line, input intact."""
    before = (workdir / "model.pt").read_bytes()
    result = run_cli(*PRUNE, "--recipe", "unstructured-50", "-o", "model.pt", "--force", cwd=workdir)
    assert result.rc == 2, result.stderr
    assert len(result.stderr_lines) == 1 and "is the input" in result.stderr, result.stderr
    assert (workdir / "model.pt").read_bytes() == before


def test_inspect_a_model_that_takes_no_image(run_cli: Runner, workdir: Path) -> None:
    result = run_cli("inspect", "linear.pt", cwd=workdir)
    assert result.rc == 0, result.stderr
    assert "linear" in result.stdout and "n/a" in result.stdout


def test_trust_pickle_opt_in(run_cli: Runner, workdir: Path) -> None:
    result = run_cli("inspect", "custom.pt", "--trust-pickle", "--imgsz", "16", cwd=workdir)
    # the user opted in: a warning that pickle code runs, once per reader that tries the file (modprune's
    # own, then the plugins' formats), before anything else
    warning = "WARNING modprune.serialization: loading custom.pt with full pickle"
    warned = [line for line in result.stderr_lines if line.startswith(warning)]
    assert 1 <= len(warned) <= 2 and result.stderr_lines[: len(warned)] == warned
    result.stderr = "\n".join(result.stderr_lines[len(warned):])
    # the class lives in the test-suite, which the CLI cannot import: a clean load error, not a crash
    assert_clean_failure(result, names=("custom.pt", "modprune_cli_test_classes"))


def test_recipes_and_plugins(run_cli: Runner, workdir: Path) -> None:
    result = run_cli("recipes", cwd=workdir)
    assert result.rc == 0 and "unstructured-10: unstructured, target 0.1" in result.stdout
    result = run_cli("recipes", "--show", "unstructured-50", cwd=workdir)
    assert result.rc == 0
    (workdir / "shown.yaml").write_text(result.stdout)
    import modprune

    assert modprune.load_recipe(str(workdir / "shown.yaml")) == modprune.load_recipe("unstructured-50")
    result = run_cli("plugins", cwd=workdir)
    assert result.rc == 0
    assert "modprune.importance.builtin" in result.stdout and "built-in" in result.stdout
    assert re.search(r"^test_plugin 0\.0\.1 \(third-party\)$", result.stdout, re.M)
    assert "magnitude_cubed" in result.stdout


# --- the real console script (slower: a new Python each time) -----------------------------------


def test_real_console_script(run_real: Runner, workdir: Path) -> None:
    result = run_real("prune", "model.pt", "--recipe", "unstructured-10", "-o", "out.pt", "--imgsz", "32", cwd=workdir)
    assert result.rc == 0, result.stderr
    result = run_real("inspect", "out.pt", "--imgsz", "32", cwd=workdir)
    assert result.rc == 0 and "depthwise_conv" in result.stdout, result.stderr
    before = tree(workdir)
    result = run_real("prune", "truncated.pt", "--recipe", "unstructured-10", "-o", "out2.pt", cwd=workdir)
    # broken third-party plugins (not ours to fix here) may add their own warning lines
    result.stderr = "\n".join(l for l in result.stderr.splitlines() if not l.startswith("WARNING modprune.plugins"))
    assert_clean_failure(result, names=("truncated.pt",))
    assert tree(workdir) == before


# --- a broken command module must not take the CLI down ---------------------------------------


def test_a_command_that_fails_to_import_only_breaks_itself(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    cli_main = importlib.import_module("modprune.cli.main")  # the module (modprune.cli.main is also a function)
    real = cli_main._command_modules
    monkeypatch.setattr(cli_main, "_command_modules", lambda: [*real(), "zz_missing_command"])
    assert cli_main.main(["recipes"]) == 0
    capsys.readouterr()
    assert cli_main.main(["zz_missing_command"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zz_missing_command" in err and "failed to load" in err
