"""Fixtures for the adversarial loading tests: a runner of real ``modprune`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

#: The CLI tests' server: imports the CLI once, then forks a fresh ``modprune`` process per command line.
SERVER = Path(__file__).parents[1] / "cli" / "_fork_server.py"


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def run_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Result]]:
    """``run_cli(*argv, cwd=path)``: the exit code and output of ``modprune argv...`` run in ``cwd``."""
    logs = tmp_path_factory.mktemp("security_cli")
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
                raise RuntimeError(f"CLI server died: {(logs / 'server.err').read_text()[-2000:]}")
            return Result(json.loads(reply)["rc"], out.read_text(), err_path.read_text())

    yield run
    assert server.stdin is not None
    server.stdin.close()
    server.wait(timeout=60)
