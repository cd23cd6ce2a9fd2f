"""A broken third-party plugin is named and skipped; it never takes the CLI down.

Each case installs a throw-away plugin distribution (a ``*.dist-info`` with a ``modprune`` entry point)
on ``PYTHONPATH`` and runs the real CLI in a subprocess.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import modprune
from modprune import hookimpl
from modprune.exceptions import ModpruneError, PluginError
from modprune.plugins import call_hook, get_plugin_manager

SRC = Path(modprune.__file__).resolve().parents[1]
CLI = "import sys; from modprune.cli import main; sys.exit(main())"

HEADER = """
import sys
import torch
from torch import nn
from modprune import hookimpl


class Gate(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1)
"""

BODIES = {
    "exit_at_import": "sys.exit(3)\n",
    "raise_at_import": "raise ImportError('missing thing')\n",
    "register_raises": "@hookimpl\ndef modprune_register_importances():\n    raise RuntimeError('boom')\n",
    "register_exits": "@hookimpl\ndef modprune_register_recipes():\n    sys.exit(4)\n",
    "layer_register_raises": "@hookimpl\ndef modprune_register_layer_pruners():\n    raise RuntimeError('boom')\n",
    "load_raises": "@hookimpl\ndef modprune_load_model(path, trust_pickle):\n    raise ValueError('boom')\n",
    "prepare_raises": "@hookimpl\ndef modprune_prepare_model(model, config):\n    raise ValueError('boom')\n",
    "finalize_raises": "@hookimpl\ndef modprune_finalize_model(model):\n    raise ValueError('boom')\n",
    "protected_raises": "@hookimpl\ndef modprune_protected_modules(model):\n    raise KeyError('boom')\n",
    "save_raises": "@hookimpl\ndef modprune_save_model(model, path, metadata):\n    raise ValueError('boom')\n",
    "save_exits": "@hookimpl\ndef modprune_save_model(model, path, metadata):\n    sys.exit(5)\n",
    "layer_pruner_raises": textwrap.dedent("""
        import torch_pruning as tp

        class GatePruner(tp.pruner.function.BasePruningFunc):
            def prune_out_channels(self, layer, idxs):
                raise ValueError('boom')
            prune_in_channels = prune_out_channels
            def get_out_channels(self, layer):
                raise ValueError('boom')
            get_in_channels = get_out_channels

        @hookimpl
        def modprune_register_layer_pruners():
            return [(Gate, GatePruner())]

        @hookimpl
        def modprune_register_safe_globals():
            return [Gate]
        """),
}


def _install(site: Path, case: str) -> str:
    name = f"evil_{case}"
    (site / f"{name}.py").write_text(HEADER + BODIES[case])
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[modprune]\n{name} = {name}\n")
    return name


def _cli(site: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", CLI, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    return path


REGISTRATION_CASES = ["exit_at_import", "raise_at_import", "register_raises", "register_exits", "layer_register_raises"]


def test_plugins_failing_at_import_or_registration_are_named_and_skipped(site: Path, tmp_path: Path) -> None:
    """One real process with five broken plugins installed: ``plugins`` and ``recipes`` still work."""
    names = [_install(site, case) for case in REGISTRATION_CASES]
    proc = _cli(site, "plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in names:
        assert f"{name} (failing" in proc.stdout, proc.stdout
    assert "modprune.pruners.builtin" in proc.stdout  # the other plugins are still listed
    proc = _cli(site, "recipes", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "structured-30" in proc.stdout
    assert all(name in proc.stderr for name in names)  # a warning names each


@pytest.fixture()
def run_with_plugin(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``run(case, *argv) -> (rc, stderr)``: the CLI in this process with plugin ``case`` installed."""
    from modprune.cli import main
    from modprune.plugins import reset_default_plugin_manager

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    installed: list[str] = []

    def run(case: str, *argv: str) -> tuple[int, str]:
        if not installed:
            installed.append(_install(site, case))
            importlib.invalidate_caches()
        reset_default_plugin_manager()
        capsys.readouterr()
        rc = main(list(argv))
        return rc, capsys.readouterr().err

    yield run
    reset_default_plugin_manager()
    for name in installed:
        sys.modules.pop(name, None)


STRUCTURED = "structured.yaml"


def _tiny_model(tmp_path: Path, gate: bool = False) -> Path:
    (tmp_path / STRUCTURED).write_text("method: structured\ntarget: 0.2\nimportance: l1\n")
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
    if gate:
        layers.append(importlib.import_module("evil_layer_pruner_raises").Gate(16))
    layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1)]
    return modprune.save(nn.Sequential(*layers), tmp_path / "model.pt", pm=get_plugin_manager(entry_points=False))


@pytest.mark.parametrize(
    ("case", "recipe", "hook"),
    [
        ("prepare_raises", STRUCTURED, "modprune_prepare_model"),
        ("finalize_raises", STRUCTURED, "modprune_finalize_model"),
        ("protected_raises", STRUCTURED, "modprune_protected_modules"),
        ("save_raises", "unstructured-10", "modprune_save_model"),
        ("save_exits", "unstructured-10", "modprune_save_model"),
        ("layer_pruner_raises", STRUCTURED, "layer pruner GatePruner."),
    ],
)
def test_a_hook_raising_when_called_is_reported_in_one_line(
    run_with_plugin, tmp_path: Path, case: str, recipe: str, hook: str
) -> None:
    name = f"evil_{case}"
    if case == "layer_pruner_raises":
        run_with_plugin(case, "plugins")  # installs it, so the model below can use its Gate module
    model = _tiny_model(tmp_path, gate=case == "layer_pruner_raises")
    rc, err = run_with_plugin(case, "prune", str(model), "--recipe", recipe, "--imgsz", "16", "-o", "out.pt")
    errors = [line for line in err.splitlines() if line.startswith("modprune:")]
    assert rc == 2, err
    assert len(errors) == 1, err
    assert f"plugin {name!r} failed in {hook}" in errors[0], errors[0]
    assert not (tmp_path / "out.pt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    rc, _ = run_with_plugin(case, "plugins")
    assert rc == 0


@pytest.mark.parametrize("case", ["prepare_raises", "finalize_raises", "protected_raises"])
def test_plugins_command_shows_a_model_hook_that_always_raises_as_failing(
    run_with_plugin, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from modprune.cli import main

    run_with_plugin(case, "recipes")  # installs it
    from modprune.plugins import reset_default_plugin_manager

    reset_default_plugin_manager()
    capsys.readouterr()
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert f"evil_{case} (failing, skipped: failed in modprune_" in out, out


def test_a_load_hook_raising_names_the_plugin_not_a_missing_file(run_with_plugin, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    rc, err = run_with_plugin("load_raises", "inspect", "weights.bin")
    errors = [line for line in err.splitlines() if line.startswith("modprune:")]
    assert rc == 2, err
    assert len(errors) == 1 and "plugin 'evil_load_raises' failed in modprune_load_model: ValueError: boom" in errors[0]
    assert "does not exist" not in err


def test_sys_exit_at_import_does_not_end_a_real_command(site: Path, tmp_path: Path) -> None:
    _install(site, "exit_at_import")
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    proc = _cli(site, "inspect", "weights.bin", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # the command ran and reported the bad file; not exit code 3
    assert "is not a model file" in proc.stderr or "not a PyTorch" in proc.stderr, proc.stderr


# --- call_hook in-process: pluggy's order, attribution, failed_plugins -------------------------------------


def _plugin(label: str, result: object = None, *, fail: bool = False, **marks: bool) -> object:
    class P:
        @hookimpl(**marks)
        def modprune_load_model(self, path: Path, trust_pickle: bool) -> object:
            calls.append(label)
            if fail:
                raise RuntimeError(f"{label} broke")
            return result

    P.__name__ = label
    return P()


calls: list[str] = []


def test_call_hook_follows_pluggys_order_and_stops_at_the_first_result() -> None:
    plugins = [_plugin("a"), _plugin("b", "B"), _plugin("c", trylast=True), _plugin("d", tryfirst=True),
               _plugin("e")]
    pm = get_plugin_manager(entry_points=False, plugins=plugins)
    calls.clear()
    expected = pm.hook.modprune_load_model(path=Path("x"), trust_pickle=False)
    pluggy_order = list(calls)
    calls.clear()
    assert call_hook(pm, "modprune_load_model", path=Path("x"), trust_pickle=False) == expected == "B"
    assert calls == pluggy_order == ["d", "e", "b"]


def test_call_hook_names_the_raising_plugin_and_records_it() -> None:
    pm = get_plugin_manager(entry_points=False, plugins=[_plugin("good"), _plugin("broken", fail=True)])
    with pytest.raises(PluginError) as info:
        call_hook(pm, "modprune_load_model", path=Path("x"), trust_pickle=False)
    assert info.value.plugin == "broken" and info.value.hook == "modprune_load_model"
    assert "plugin 'broken' failed in modprune_load_model: RuntimeError: broken broke" in str(info.value)
    assert "broken" in pm.failed_plugins


def test_call_hook_lets_modprune_errors_through_and_collects_non_firstresult_hooks() -> None:
    class Protects:
        @hookimpl
        def modprune_protected_modules(self, model: nn.Module) -> list[nn.Module]:
            return [model[0]]

    class Refuses:
        @hookimpl
        def modprune_finalize_model(self, model: nn.Module) -> None:
            raise ModpruneError("a clear message")

    pm = get_plugin_manager(entry_points=False, plugins=[Protects(), Refuses()])
    model = nn.Sequential(nn.Linear(2, 2))
    assert [model[0]] in call_hook(pm, "modprune_protected_modules", model=model)
    with pytest.raises(ModpruneError, match="a clear message") as info:
        call_hook(pm, "modprune_finalize_model", model=model)
    assert not isinstance(info.value, PluginError)


def test_keyboard_interrupt_in_a_hook_still_stops() -> None:
    class Interrupts:
        @hookimpl
        def modprune_finalize_model(self, model: nn.Module) -> None:
            raise KeyboardInterrupt

    pm = get_plugin_manager(entry_points=False, plugins=[Interrupts()])
    with pytest.raises(KeyboardInterrupt):
        call_hook(pm, "modprune_finalize_model", model=nn.Linear(1, 1))

