"""The CLI tells what it is doing (issue 14, item 7): progress lines, a dry run, no temp paths, examples."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

Runner = Callable[..., Any]  # the run_cli fixture (tests/cli/conftest.py)

PRUNE = ("prune", "model.pt", "--imgsz", "32")
#: Structured, without the built-in recipe's round_to (the test model's layers are 16 and 32 wide).
STRUCTURED = "method: structured\ntarget: 0.2\ntarget_kind: macs\nimportance: l2\n"


def _recipe(workdir: Path) -> str:
    (workdir / "s.yaml").write_text("name: s\nconfig:\n" + "".join(f"  {line}\n" for line in STRUCTURED.splitlines()))
    return "s.yaml"


def test_prune_reports_its_phases_and_no_temporary_paths(run_cli: Runner, workdir: Path) -> None:
    result = run_cli(*PRUNE, "--recipe", _recipe(workdir), "-o", "out.pt", "--report-json", "r.json", cwd=workdir)
    assert result.rc == 0, result.stderr
    for phase in ("preparing", "planning", "tracing the dependency graph", "step 1/1: planning",
                  "step 1/1: pruned", "measuring the pruned model"):
        assert phase in result.stderr, (phase, result.stderr)
    assert not re.search(r"/tmp|\.staging|modprune-[a-z]+-\w+|\.partial", result.stderr), result.stderr
    assert "weight (relative)" in result.stdout and "requested ratio" not in result.stdout
    rows = json.loads((workdir / "r.json").read_text())["categories"]
    assert rows and all(r["weight"] == r["requested_ratio"] for r in rows)


def test_quiet_after_the_subcommand_silences_progress_and_debug_shows_more(run_cli: Runner, workdir: Path) -> None:
    quiet = run_cli(*PRUNE, "--recipe", "unstructured-10", "-o", "q.pt", "-q", cwd=workdir)
    assert quiet.rc == 0 and "INFO" not in quiet.stderr, quiet.stderr
    debug = run_cli(*PRUNE, "--recipe", "unstructured-10", "-o", "d.pt", "--debug", cwd=workdir)
    assert debug.rc == 0 and "DEBUG" in debug.stderr and "INFO" in debug.stderr, debug.stderr


def test_dry_run_prints_the_layer_plan_and_writes_nothing(run_cli: Runner, workdir: Path) -> None:
    recipe = _recipe(workdir)
    before = sorted(p.name for p in workdir.iterdir())
    result = run_cli(*PRUNE, "--recipe", recipe, "--dry-run", cwd=workdir)
    assert result.rc == 0, result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == before
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["layer", "type", "outputs", "inputs", "MACs", "changed"]
    first = next(line for line in lines if line.startswith("0 "))  # nn.Sequential: layer "0", Conv2d 3 -> 16
    assert re.search(r"Conv2d\s+16 -> \d+\s+3 -> 3\s+[\d.]+M -> [\d.]+M", first), first
    changed = [line for line in lines if line.rstrip().endswith("*")]
    assert changed and "achieved 0.2" in result.stdout and "dry run: nothing written" in result.stdout
    total = next(line for line in lines if line.startswith("total"))
    macs = [float(x) for x in re.findall(r"([\d.]+)M", total)]
    assert macs[1] < macs[0]


def test_prune_without_output_or_dry_run_is_refused(run_cli: Runner, workdir: Path) -> None:
    result = run_cli(*PRUNE, "--recipe", "structured-30", cwd=workdir)
    assert result.rc == 2 and "-o/--output" in result.stderr and "--dry-run" in result.stderr, result.stderr


def test_prune_help_shows_examples_including_the_dry_run(run_cli: Runner, workdir: Path) -> None:
    result = run_cli("prune", "--help", cwd=workdir)
    assert result.rc == 0 and "examples:\n  modprune prune" in result.stdout and "--dry-run" in result.stdout
