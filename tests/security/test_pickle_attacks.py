"""Checkpoints that try to run code at load time, through the CLI as a user would run it.

Every case is a file made only of what modprune's loader allowlists (or of plain pickle tricks);
each would run code (write a marker file) or touch the network if the loader called what the file
names. Each must be refused with exit code 2 and one line, and the marker must not exist.
"""

from __future__ import annotations

import builtins
import collections
import copyreg
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from ultralytics.nn import modules as ul_modules
from ultralytics.nn import tasks

from _hostile import Call, dumps, global_op, raw_pickle, torch_archive


def _evil_cfg(marker: Path) -> dict[str, Any]:
    """An ultralytics model dict whose ``activation`` ultralytics would ``eval``."""
    return {
        "nc": 1,
        "activation": f"__import__('pathlib').Path({str(marker)!r}).touch() or __import__('torch').nn.SiLU()",
        "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
        "head": [[-1, 1, "Conv", [16, 3, 1]]],
    }


def _cases(marker: Path) -> dict[str, bytes]:
    evil = _evil_cfg(marker)
    touch = f"touch {marker}"
    return {
        # allowlisted classes called with arguments of the file's choosing
        "reduce-detectionmodel": dumps(Call(tasks.DetectionModel, evil)),
        "newobj-detectionmodel": raw_pickle(
            global_op("ultralytics.nn.tasks", "DetectionModel"), dumps((evil,))[2:-1], b"\x81"
        ),
        "torchvision-download": dumps(Call(ul_modules.TorchVision, "resnet18", "DEFAULT")),
        "nested-in-ordereddict": dumps({"model": Call(collections.OrderedDict, [("a", Call(os.system, touch))])}),
        "ckpt-with-constructor": dumps({"epoch": -1, "model": Call(tasks.DetectionModel, evil), "ema": None}),
        # plain pickle tricks
        "os-system": dumps(Call(os.system, touch)),
        "builtins-eval": dumps(Call(builtins.eval, f"__import__('os').system({touch!r})")),
        "builtins-exec": dumps(Call(builtins.exec, f"import os; os.system({touch!r})")),
        "getattr-chain": dumps(Call(builtins.getattr, nn.Module, "__subclasses__")),
        "copyreg-reconstructor": dumps(Call(copyreg._reconstructor, tasks.DetectionModel, object, None)),
        "import": raw_pickle(global_op("builtins", "__import__"), b"X\x02\x00\x00\x00os\x85R"),
        "inst-opcode": b"(S'" + touch.encode() + b"'\nios\nsystem\n.",
        "obj-opcode": raw_pickle(b"(", global_op("os", "system"), b"X" + len(touch).to_bytes(4, "little") + touch.encode() + b"o"),
        "ext-registry": raw_pickle(b"\x82\x01"),
        "persid-not-storage": raw_pickle(b"X\x04\x00\x00\x00evil\x85Q"),
        "rebuild-with-hooks": dumps(
            Call(torch._utils._rebuild_tensor_v2, None, 0, (1,), (1,), False, collections.OrderedDict(a=os.system))
        ),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "code-ran"
    files = {name: torch_archive(folder / f"{name}.pt", data) for name, data in _cases(marker).items()}
    return folder, marker, files


CASES = list(_cases(Path("m")))


@pytest.mark.parametrize("case", CASES)
def test_hostile_checkpoint_is_refused(run_cli: Any, hostile: tuple[Path, Path, dict[str, Path]], case: str) -> None:
    folder, marker, files = hostile
    result = run_cli("inspect", files[case], cwd=folder)
    assert result.rc == 2, (result.stdout, result.stderr)
    assert len(result.stderr_lines) == 1, result.stderr
    assert "trust-pickle" in result.stderr or "not a readable" in result.stderr
    assert not marker.exists()


def test_legacy_raw_pickle_is_refused(run_cli: Any, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(Call(os.system, f"touch {marker}"), protocol=2))
    result = run_cli("inspect", tmp_path / "raw.pt", cwd=tmp_path)
    assert result.rc == 2 and len(result.stderr_lines) == 1 and "--trust-pickle" in result.stderr
    assert not marker.exists()


def test_torchscript_archive_is_refused(run_cli: Any, tmp_path: Path) -> None:
    """torch.load hands TorchScript archives to torch.jit.load; modprune refuses them instead."""
    torch.jit.save(torch.jit.script(nn.Conv2d(3, 4, 3)), tmp_path / "scripted.pt")
    result = run_cli("inspect", tmp_path / "scripted.pt", cwd=tmp_path)
    assert result.rc == 2 and "TorchScript" in result.stderr and len(result.stderr_lines) == 1


def test_trust_pickle_is_the_opt_in(run_cli: Any, tmp_path: Path) -> None:
    """The one way past the guard: the file's code runs (here: it writes the marker)."""
    marker = tmp_path / "code-ran"
    torch_archive(tmp_path / "evil.pt", dumps(Call(os.system, f"touch {marker}")))
    result = run_cli("inspect", tmp_path / "evil.pt", "--trust-pickle", cwd=tmp_path)
    assert marker.exists()
    assert result.rc == 2  # the code ran, then the result is no model
