"""Run a Python snippet in a process where modprune and its TokenC3-LSNet plugin cannot be imported.

Used as ``python _blocked.py SNIPPET_FILE``: a ``sys.meta_path`` finder placed first raises
ModuleNotFoundError for ``modprune`` and ``modprune_tokenc3_lsnet`` (and their submodules), as on a
machine where only ultralytics is installed; then the snippet runs.
"""

import importlib.abc
import runpy
import sys

BLOCKED = ("modprune", "modprune_tokenc3_lsnet")


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


sys.meta_path.insert(0, _Block())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
