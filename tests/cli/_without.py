"""Run modprune command lines as if the packages in MODPRUNE_TEST_BLOCK (comma-separated) were not installed.

Usage: ``python _without.py REQUESTS.json`` where the file holds a list of ``{"argv", "cwd", "stdout",
"stderr"}``; each command runs in a forked child (modprune and torch are imported once) and the exit codes
are printed as a JSON list. ``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError
and ``importlib.util.find_spec(name)`` return None, as for a package that is absent.
"""

import json
import os
import sys

for name in filter(None, os.environ.get("MODPRUNE_TEST_BLOCK", "").split(",")):
    sys.modules[name] = None  # type: ignore[assignment]

import torch  # noqa: E402,F401 - imported once, before forking

from modprune.cli import main  # noqa: E402


def _child(request: dict) -> None:
    os.chdir(request["cwd"])
    for fd, key in ((1, "stdout"), (2, "stderr")):
        target = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
    sys.argv = ["modprune", *request["argv"]]
    try:
        rc = main(request["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        rc = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


codes = []
for request in json.loads(open(sys.argv[1]).read()):
    pid = os.fork()
    if pid == 0:
        _child(request)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
