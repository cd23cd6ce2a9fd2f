"""Datasets are inputs: while ultralytics runs under modprune it neither runs code from nor writes into them.

ultralytics keeps a label cache (``labels/train.cache``) beside a dataset's labels. It reads that file
with NumPy's pickle support enabled, so a dataset folder from a stranger could run code, and it writes
or overwrites the file after every scan. It also reads and refreshes ``image.npy`` files beside the
images. :func:`guarded_datasets` changes this for the duration of a ``with`` block only (and restores
ultralytics afterwards):

* cache files in dataset folders are never read: labels are rescanned from the label text files, and
  the scan is kept in this process's memory (keyed by the cache path; ultralytics still checks its
  hash of the dataset's files, so a changed dataset is rescanned);
* nothing is written into the dataset folder (no ``.cache``, no ``.npy``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

__all__ = ["guarded_datasets"]

LOG = logging.getLogger(__name__)

_MEMORY: OrderedDict[str, dict[str, Any]] = OrderedDict()  # cache path -> the scan ultralytics made
_MEMORY_SIZE = 8
_LOCK = threading.RLock()
_DEPTH = [0]
_SAVED: list[tuple[Any, str, Any]] = []  # (module or class, attribute, original value)
#: A folder that never exists: image ``.npy`` caches are looked up there, so none is read or written.
_NO_NPY = Path(os.devnull + ".modprune-no-npy-cache")


def _load_cache(path: Any) -> dict[str, Any]:
    with _LOCK:
        cached = _MEMORY.get(str(Path(path).resolve()))
    if cached is None:  # what ultralytics does when there is no cache file yet: it rescans
        raise FileNotFoundError(f"no in-memory label cache for {path}")
    return copy.deepcopy(cached)


def _save_cache(prefix: str, path: Any, x: dict[str, Any], version: str) -> None:
    x["version"] = version  # as ultralytics' own saver does: the loader checks it
    with _LOCK:
        _MEMORY[str(Path(path).resolve())] = copy.deepcopy(x)
        while len(_MEMORY) > _MEMORY_SIZE:
            _MEMORY.popitem(last=False)
    LOG.debug("%slabel cache kept in memory, not written to %s", prefix, path)


def _guarded_init(original: Any) -> Any:
    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        files = getattr(self, "npy_files", None)
        if isinstance(files, list):
            self.npy_files = [_NO_NPY / f"{i}.npy" for i in range(len(files))]

    return init


def _patch(target: Any, name: str, value: Any) -> None:
    if hasattr(target, name):
        _SAVED.append((target, name, getattr(target, name)))
        setattr(target, name, value)


@contextlib.contextmanager
def guarded_datasets() -> Iterator[None]:
    """Run the block with ultralytics' dataset caches kept out of dataset folders (re-entrant).

    Not inherited by subprocesses (e.g. multi-GPU DDP workers, which ultralytics starts itself).
    """
    from ultralytics.data import base, dataset, utils  # noqa: PLC0415 - only when ultralytics runs

    with _LOCK:
        if _DEPTH[0] == 0:
            for module in (utils, dataset):
                _patch(module, "load_dataset_cache_file", _load_cache)
                _patch(module, "save_dataset_cache_file", _save_cache)
            _patch(base.BaseDataset, "__init__", _guarded_init(base.BaseDataset.__init__))
        _DEPTH[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                while _SAVED:
                    target, name, value = _SAVED.pop()
                    setattr(target, name, value)
