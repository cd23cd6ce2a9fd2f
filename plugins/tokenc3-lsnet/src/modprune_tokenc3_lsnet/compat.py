"""Load checkpoints pickled by the user's YOLOv13 fork (an ultralytics 8.3.63 fork).

Those checkpoints store the fork's blocks under ultralytics' own module paths
(``ultralytics.nn.modules.block.TokenC3``, ``ultralytics.nn.modules.conv.DSConv``, ...), which do not exist
in stock ultralytics. :data:`FORK_CLASS_PATHS` maps each such path to this plugin's class.

- :func:`fork_aliases` is a context manager that sets those attributes on the ultralytics modules for its
  body, turns ultralytics' auto-install of missing packages off (``YOLO_AUTOINSTALL=False`` in the
  environment and in the flags ultralytics read at import), and restores everything afterwards.
- :func:`load_fork_checkpoint` loads a checkpoint file inside :func:`fork_aliases` with modprune's restricted
  loader (objects rebuilt from stored state only, no constructor runs) and, by default, rebuilds each
  pickled model with this plugin's parser and loads its state_dict with ``strict=True``.

Rebuilding matters: unpickling restores the fork's non-tensor attributes (split sizes, flags) into the
plugin's classes, and those need not match what this plugin's ``forward`` reads. The rebuilt model
is a fresh ``DetectionModel`` in float32 carrying the checkpoint's weights, BN statistics, ``names``
and ``args``.

Loading runs no code named by the file unless ``trust_pickle=True``. Rebuilding parses the checkpoint's
``yaml`` with this plugin's parser: call :func:`modprune.model_yaml.validate_model_cfg` on it first if the
file is not yours (``modprune.load`` does).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickletools
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from modprune_tokenc3_lsnet import blocks as B

__all__ = [
    "FORK_CLASS_PATHS",
    "autoinstall_disabled",
    "fork_aliases",
    "is_fork_checkpoint",
    "load_fork_checkpoint",
    "load_fork_model",
    "rebuild_model",
]

log = logging.getLogger(__name__)

_BLOCK = "ultralytics.nn.modules.block"
_CONV = "ultralytics.nn.modules.conv"

#: Fork class path -> plugin class. Stock classes the fork also pickles (``Conv``, ``DWConv``,
#: ``Concat``, ``Bottleneck``, ``DFL``, ``Detect``, ``DetectionModel``) exist in ultralytics and need no alias.
FORK_CLASS_PATHS: dict[str, type[nn.Module]] = {
    **{
        f"{_BLOCK}.{cls.__name__}": cls
        for cls in (
            B.TokenC3,
            B.LSConv,
            B.LSGhostBottleneck,
            B.DynamicLocalMixer,
            B.HyperACE,
            B.FuseModule,
            B.C3AH,
            B.AdaHGComputation,
            B.AdaHGConv,
            B.AdaHyperedgeGen,
            B.DSC3k,
            B.DSC3k2,
            B.DSBottleneck,
            B.DownsampleConv,
            B.FullPAD_Tunnel,
        )
    },
    f"{_CONV}.DSConv": B.DSConv,
}

_LOCK = threading.RLock()
_MISSING = object()
_AUTOINSTALL_FLAG_MODULES = ("ultralytics.utils", "ultralytics.utils.checks")


def _set_attr(module: Any, attr: str, value: Any, saved: list[tuple[Any, str, Any]]) -> None:
    """Set ``module.attr`` to ``value``, remembering the previous value in ``saved``."""
    saved.append((module, attr, module.__dict__.get(attr, _MISSING)))
    setattr(module, attr, value)


def _restore(saved: list[tuple[Any, str, Any]]) -> None:
    """Undo :func:`_set_attr` calls, newest first."""
    for module, attr, value in reversed(saved):
        if value is _MISSING:
            delattr(module, attr)
        else:
            setattr(module, attr, value)


@contextlib.contextmanager
def autoinstall_disabled() -> Iterator[None]:
    """Turn ultralytics' auto-install off for the body: env ``YOLO_AUTOINSTALL=False`` and the
    ``AUTOINSTALL`` flags already read by ``ultralytics.utils`` and ``ultralytics.utils.checks``."""
    saved: list[tuple[Any, str, Any]] = []
    env_before = os.environ.get("YOLO_AUTOINSTALL")
    os.environ["YOLO_AUTOINSTALL"] = "False"
    try:
        for name in _AUTOINSTALL_FLAG_MODULES:
            module = sys.modules.get(name)
            if module is not None and hasattr(module, "AUTOINSTALL"):
                _set_attr(module, "AUTOINSTALL", False, saved)
        yield
    finally:
        _restore(saved)
        if env_before is None:
            os.environ.pop("YOLO_AUTOINSTALL", None)
        else:
            os.environ["YOLO_AUTOINSTALL"] = env_before


@contextlib.contextmanager
def fork_aliases() -> Iterator[None]:
    """Register :data:`FORK_CLASS_PATHS` on the ultralytics modules for the body, with auto-install off.

    Inside the body ``torch.load`` (or ultralytics' loaders) resolve the fork's class paths to this
    plugin's classes. Everything is restored on exit, including attributes that existed before.
    Holds a process-wide lock for the body so concurrent uses do not interleave.
    """
    with _LOCK, autoinstall_disabled():
        saved: list[tuple[Any, str, Any]] = []
        try:
            for path, cls in FORK_CLASS_PATHS.items():
                module_name, attr = path.rsplit(".", 1)
                _set_attr(importlib.import_module(module_name), attr, cls, saved)
            yield
        finally:
            _restore(saved)


def rebuild_model(pickled: nn.Module) -> nn.Module:
    """Rebuild a pickled fork model from its ``yaml`` with this plugin and load its weights strictly.

    Returns a float32 ``DetectionModel`` with the pickled model's state_dict (``strict=True``) and
    its ``names``/``args``/``task`` attributes when present.
    """
    from modprune_tokenc3_lsnet.model import build_model

    cfg = getattr(pickled, "yaml", None)
    if not isinstance(cfg, dict):
        raise ValueError(f"cannot rebuild {type(pickled).__name__}: it has no yaml dict")
    model = build_model(cfg, ch=int(cfg.get("channels", 3)), nc=cfg.get("nc"), verbose=False)
    model.load_state_dict(pickled.float().state_dict(), strict=True)
    for attr in ("names", "args", "task"):
        if hasattr(pickled, attr):
            setattr(model, attr, getattr(pickled, attr))
    return model.float()


def load_fork_checkpoint(path: str | Path, rebuild: bool = True, trust_pickle: bool = False) -> dict[str, Any]:
    """Load a checkpoint saved by the user's YOLOv13 fork.

    Args:
        path: Local ``.pt`` file (never downloaded).
        rebuild: Replace the ``model`` and ``ema`` entries by models rebuilt with this plugin
            (see :func:`rebuild_model`). With False, they are the unpickled objects as they are:
            plugin classes carrying the fork's attributes, good for reading state_dicts but not
            guaranteed to run.
        trust_pickle: Allow full pickle for a checkpoint that needs more than modprune's restricted
            loader rebuilds (only for files you trust: their code runs).

    Returns:
        The checkpoint dict (``model``, ``ema``, ``train_args``, ... as saved).

    Raises:
        modprune.UnsafeCheckpointError: the checkpoint needs more than stored state, without ``trust_pickle``.
    """
    from modprune.serialization import load_file

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint not found: {file}")
    with fork_aliases():  # the fork's class paths resolve to this plugin's (allowlisted) classes
        ckpt = load_file(file, trust_pickle=trust_pickle)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{file} is not a checkpoint dict")
    if rebuild:
        for key in ("model", "ema"):
            if isinstance(ckpt.get(key), nn.Module):
                ckpt[key] = rebuild_model(ckpt[key])
    return ckpt


def _pickle_globals(path: Path) -> set[str]:
    """The ``module.name`` globals the pickle of a PyTorch zip archive names (nothing is unpickled)."""
    with zipfile.ZipFile(path) as archive:
        records = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(records) != 1:
            return set()
        data = archive.read(records[0])
    found: set[str] = set()
    strings: list[str] = []
    for opcode, arg, _pos in pickletools.genops(data):
        if opcode.name == "GLOBAL" and isinstance(arg, str):
            found.add(arg.replace(" ", "."))
        elif isinstance(arg, str):  # STACK_GLOBAL (protocol 4+) takes the last two strings pushed
            strings = [*strings[-1:], arg]
        elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
            found.add(".".join(strings))
    return found


def is_fork_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a PyTorch file whose pickle names one of :data:`FORK_CLASS_PATHS`.

    Reads the pickle's opcodes only (no object is rebuilt); False for files that are no zip archive
    or cannot be read.
    """
    file = Path(path)
    try:
        if not file.is_file() or not zipfile.is_zipfile(file):
            return False
        return bool(_pickle_globals(file) & set(FORK_CLASS_PATHS))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


def load_fork_model(path: str | Path, trust_pickle: bool = False) -> nn.Module:
    """The model of a fork checkpoint (its EMA when saved, else ``model``), rebuilt, float32, eval mode.

    The checkpoint's ``train_args`` become ``model.args`` (a dict, as ultralytics attaches them), so
    saving the model again (``modprune.save``) keeps them.
    """
    ckpt = load_fork_checkpoint(path, rebuild=True, trust_pickle=trust_pickle)
    model = ckpt.get("ema") if isinstance(ckpt.get("ema"), nn.Module) else ckpt.get("model")
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path} holds no model (neither 'ema' nor 'model' is a module)")
    train_args = ckpt.get("train_args")
    if isinstance(train_args, Mapping):
        model.args = dict(train_args)
    return model.float().eval()
