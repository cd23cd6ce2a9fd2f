"""The class manifest of a modprune file: which ``nn.Module`` classes its pickle needs.

:func:`modprune.save` adds a ``modprune.json`` record to the zip archive ``torch.save`` wrote::

    {"manifest": 1, "classes": ["torchvision.models.resnet:ResNet", ...]}

:func:`modprune.load` reads it before unpickling and lets the restricted unpickler rebuild exactly those
classes, from stored state only (no constructor runs). A listed class must be an ``nn.Module`` subclass
of a module that is already imported or is an installed, non-standard-library package; importing it runs
that package's import-time code, as any ``import`` does. Nothing else in the file is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import pickletools
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from modprune.exceptions import ModelLoadError
from modprune.safe_pickle import UnsafePickleError

__all__ = ["MANIFEST_NAME", "declared_classes", "write_manifest"]

MANIFEST_NAME = "modprune.json"
_MANIFEST_VERSION = 1
log = logging.getLogger(__name__)
_MAX_MANIFEST_BYTES = 1 << 20
_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _pickle_record(archive: zipfile.ZipFile) -> str | None:
    names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    return names[0] if len(names) == 1 else None


def _module_classes_in(data: bytes) -> list[type]:
    """The ``nn.Module`` subclasses a pickle names (``GLOBAL`` opcodes; torch.save writes protocol 2)."""
    found: list[type] = []
    for opcode, arg, _pos in pickletools.genops(data):
        if opcode.name != "GLOBAL" or not isinstance(arg, str):
            continue
        module_name, _, name = arg.partition(" ")
        module = sys.modules.get(module_name)
        obj = vars(module).get(name) if module is not None else None
        if isinstance(obj, type) and issubclass(obj, nn.Module) and "<locals>" not in obj.__qualname__:
            if obj not in found:
                found.append(obj)
    return found


def write_manifest(path: Path) -> None:
    """Add the class manifest to the PyTorch zip archive at ``path`` (a no-op for other files)."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        record = _pickle_record(archive)
        if record is None or any(n.endswith("/" + MANIFEST_NAME) for n in archive.namelist()):
            return
        classes = _module_classes_in(archive.read(record))
    manifest = {"manifest": _MANIFEST_VERSION, "classes": [f"{c.__module__}:{c.__qualname__}" for c in classes]}
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{record.rsplit('/', 1)[0]}/{MANIFEST_NAME}", json.dumps(manifest, indent=1))


def declared_classes(archive: zipfile.ZipFile, path: Path) -> list[type]:
    """The classes a modprune file's manifest declares, resolved; [] for files without one.

    :raises UnsafePickleError: an entry is in the standard library or is not an ``nn.Module`` class.
    :raises ModelLoadError: the manifest is malformed.
    """
    record = _pickle_record(archive)
    name = f"{record.rsplit('/', 1)[0]}/{MANIFEST_NAME}" if record else None
    if name is None or name not in archive.namelist():
        return []
    if archive.getinfo(name).file_size > _MAX_MANIFEST_BYTES:
        raise ModelLoadError(f"{str(path)!r} has an oversized class manifest ({MANIFEST_NAME})", str(path))
    try:
        manifest = json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError):
        raise ModelLoadError(f"{str(path)!r} has a malformed class manifest ({MANIFEST_NAME})", str(path)) from None
    entries = manifest.get("classes") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, str) and _ENTRY.fullmatch(e) for e in entries):
        raise ModelLoadError(f"{str(path)!r} has a malformed class manifest ({MANIFEST_NAME})", str(path))
    return [cls for cls in (_resolve(entry, path) for entry in entries) if cls is not None]


def _import(module_name: str, entry: str, path: Path) -> Any:
    """The module of a manifest entry; None when it is not installed or fails to import (the unpickler
    then refuses the class, and ``trust_pickle`` remains the way to load the file)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "__main__":  # never imported: no model classes, side effects
        raise UnsafePickleError(f"the manifest entry {entry} (a standard-library module)", entry)
    try:
        if importlib.util.find_spec(module_name) is None:
            log.debug("%s: manifest class %s: module %r is not installed", path, entry, module_name)
            return None
        return importlib.import_module(module_name)
    except Exception as exc:  # an installed package failing at import: the class stays refused
        log.debug("%s: manifest class %s: importing %r failed: %s", path, entry, module_name, type(exc).__name__)
        return None


def _resolve(entry: str, path: Path) -> type | None:
    module_name, qualname = entry.split(":")
    obj: Any = _import(module_name, entry, path)
    if obj is None:
        return None
    for part in qualname.split("."):
        obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None  # no module __getattr__
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise UnsafePickleError(f"the manifest entry {entry} (not an nn.Module class)", entry)
    return obj
