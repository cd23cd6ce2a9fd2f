"""Fixtures for the CLI tests: a fast runner of ``modprune`` command lines and a folder of test inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from torch import nn

import modprune

SERVER = Path(__file__).with_name("_fork_server.py")
MODPRUNE = Path(sys.executable).with_name("modprune")


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


Runner = Callable[..., Result]


@pytest.fixture(scope="session")
def run_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """``run_cli(*argv, cwd=path)``: run ``modprune argv...`` in a fresh process forked from a warm server."""
    logs = tmp_path_factory.mktemp("cli_server")
    with open(logs / "server.err", "w") as err:
        server = subprocess.Popen(
            [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
    lock = threading.Lock()
    count = [0]

    def run(*argv: str | os.PathLike[str], cwd: Path) -> Result:
        with lock:
            count[0] += 1
            out, err_path = logs / f"{count[0]}.out", logs / f"{count[0]}.err"
            request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "stdout": str(out), "stderr": str(err_path)}
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            reply = server.stdout.readline()
            if not reply:
                raise RuntimeError(f"CLI test server died: {(logs / 'server.err').read_text()[-2000:]}")
            return Result(json.loads(reply)["rc"], out.read_text(), err_path.read_text())

    yield run
    assert server.stdin is not None
    server.stdin.close()
    server.wait(timeout=60)


@pytest.fixture(scope="session")
def run_real(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """``run_real(*argv, cwd=path)``: run the installed ``modprune`` console script in a new process."""

    def run(*argv: str | os.PathLike[str], cwd: Path) -> Result:
        proc = subprocess.run([str(MODPRUNE), *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=300)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    if not MODPRUNE.exists():
        pytest.skip(f"the modprune console script is not installed next to {sys.executable}")
    return run


class Custom(nn.Module):
    """A module class outside the weights-only allowlist (and not importable by the CLI)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# Every conftest.py is imported as "conftest", so pickle could not find this class by its module:
# give it a module of its own.
_MODULE = types.ModuleType("modprune_cli_test_classes")
Custom.__module__ = _MODULE.__name__
_MODULE.Custom = Custom  # type: ignore[attr-defined]
sys.modules[_MODULE.__name__] = _MODULE


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


#: A valid 1x1 PNG image.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files a user might pass: a good model, broken ones, images, recipes good and bad."""
    d = tmp_path_factory.mktemp("cli_inputs")
    modprune.save(_cnn(), d / "model.pt")
    modprune.save(nn.Sequential(nn.Linear(4, 4)), d / "linear.pt")
    modprune.save(nn.Sequential(Custom()), d / "custom.pt")
    data = (d / "model.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "corrupt.pt").write_bytes(bytes((i * 7919) % 251 for i in range(4096)))
    (d / "empty.pt").write_bytes(b"")
    (d / "image.png").write_bytes(PNG)
    (d / "image.pt").write_bytes(PNG)
    (d / "image.yaml").write_bytes(PNG)
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "wrong_shape.yaml").write_text("config: [1, 2]\n")
    (d / "folder").mkdir()
    recipes = {
        "ok.yaml": "name: ok\nconfig:\n  target: 0.3\n",
        "wrong_type.yaml": "config:\n  target: high\n",
        "wrong_value.yaml": "config:\n  target: 1.5\n",
        "wrong_steps.yaml": "config:\n  steps: 0\n",
        "unknown_key.yaml": "config:\n  tagret: 0.2\n",
        "unknown_importance.yaml": "config:\n  importance: l7\n",
        "unknown_category.yaml": "config:\n  protect: [convs]\n",
        "unreachable.yaml": "config:\n  target: 0.5\n  protect: [conv, depthwise_conv, linear]\n",
        "bad_yaml.yaml": "config: {target: 0.2\n",
    }
    for name, text in recipes.items():
        (d / name).write_text(text)
    return d


@pytest.fixture()
def workdir(tmp_path: Path, inputs: Path) -> Path:
    """A fresh working directory holding a copy of every input file."""
    work = tmp_path / "work"
    shutil.copytree(inputs, work)
    return work
