"""Saving and loading whole models, safely.

A modprune file is ``torch.save`` of ``{"modprune_format": 1, "metadata": {...}, "model": module}``
plus a class manifest record (:mod:`modprune.manifest`). Loading uses modprune's restricted unpickler
(:mod:`modprune.safe_pickle`): tensors and objects are rebuilt from stored state only, for PyTorch's
layer classes, every class plugins register through ``modprune_register_safe_globals`` and the
``nn.Module`` classes the file's manifest declares; no constructor or other function of the file's
choosing runs. A file that needs anything else is refused unless the caller passes
``trust_pickle=True`` (arbitrary code may run). Other formats (ultralytics checkpoints, model yamls)
are loaded through ``modprune_load_model``; model yamls are validated first (:mod:`modprune.model_yaml`).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from modprune.exceptions import (
    ModelLoadError,
    ModpruneError,
    UnsafeCheckpointError,
    PluginError,
    UnsupportedModelError,
)
from modprune.manifest import declared_classes, write_manifest
from modprune.model_yaml import check_model_yaml, is_model_cfg, validate_model_cfg
from modprune.optional import available, missing_dependency_error
from modprune.outputs import check_output, disk_error, staged_outputs
from modprune.plugins import ModpruneManager, call_hook, resolve
from modprune.safe_pickle import UnsafePickleError, pickle_module_for

__all__ = ["FORMAT_VERSION", "atomic_path", "load", "load_file", "make_metadata", "save", "safe_globals"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_YAML_SUFFIXES = (".yaml", ".yml")


def _torch_module_classes() -> list[type]:
    classes = []
    for _name, obj in inspect.getmembers(nn):
        if inspect.isclass(obj) and issubclass(obj, nn.Module):
            classes.append(obj)
    from torch.nn.utils import parametrize

    classes.append(parametrize.ParametrizationList)
    return classes


def safe_globals(pm: ModpruneManager | None = None) -> list[type]:
    """Classes the weights-only loader may rebuild: PyTorch layers and every plugin's registrations."""
    return _torch_module_classes() + list(resolve(pm).safe_globals)


def make_metadata(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata record stored in every output: modprune version, time, plus ``extra``."""
    from modprune import __version__

    meta: dict[str, Any] = {
        "modprune_version": __version__,
        "torch_version": str(torch.__version__),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra or {})
    return meta


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    The path is checked by :func:`modprune.outputs.check_output`; a full or read-only disk raises
    :class:`~modprune.exceptions.DiskError`.
    """
    path = check_output(path, force=overwrite, probe=False)
    with staged_outputs() as stage:
        yield stage.file(path)


def save(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    pm: ModpruneManager | None = None,
) -> Path:
    """Save ``model`` to ``path`` atomically; :func:`load` returns an equal model.

    Plugins may write their own format (``modprune_save_model``): ultralytics models become
    ultralytics-style checkpoints that ``YOLO(path)`` loads. Masks kept as parametrizations are
    baked into the saved weights; the live model keeps its masks.
    """
    from modprune.pruners.masks import masks_baked

    if not isinstance(model, nn.Module):
        raise ModpruneError(f"save() needs a torch.nn.Module, got {type(model).__name__}", model)
    pm = resolve(pm)
    meta = make_metadata(metadata)
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp, masks_baked(model):
        handled = call_hook(pm, "modprune_save_model", model=model, path=tmp, metadata=meta)
        if not handled:
            try:
                torch.save({"modprune_format": FORMAT_VERSION, "metadata": meta, "model": model}, tmp)
            except RuntimeError as exc:  # PyTorch's writer reports a full disk as a RuntimeError
                raise disk_error(exc, path) or exc
            except (pickle.PicklingError, AttributeError, TypeError) as exc:  # e.g. a lambda attribute
                raise UnsupportedModelError(
                    f"the model cannot be saved: {type(exc).__name__}: {_first_line(exc)}", model
                ) from exc
        write_manifest(tmp)  # the nn.Module classes the pickle needs, read first by load()
    log.debug("saved %s", path)  # often a staging path: not for the default output
    return path


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"model file {str(path)!r} does not exist", str(path))
    if path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is a directory; give a model file", str(path))


def load_file(path: str | os.PathLike[str], *, trust_pickle: bool = False, pm: ModpruneManager | None = None) -> Any:
    """Read a PyTorch file with modprune's restricted unpickler; other pickles need ``trust_pickle``.

    The file can rebuild tensors and allowlisted objects from their stored state only: PyTorch's
    layers, the classes plugins register (``modprune_register_safe_globals``) and, in files
    :func:`save` wrote, the importable ``nn.Module`` classes the file declares. No constructor,
    function, ``eval`` or unlisted import runs (see :mod:`modprune.safe_pickle`).

    :raises UnsafeCheckpointError: the file needs something the restricted unpickler does not do.
    :raises ModelLoadError: the file is missing, truncated or not a PyTorch file.
    """
    path = Path(path)
    _check_readable(path)
    _check_zip_integrity(path)
    if not zipfile.is_zipfile(path):  # legacy (pre-1.6) PyTorch files and files that are no PyTorch file
        if trust_pickle:
            return _trusted_load(path)
        with path.open("rb") as handle:
            head = handle.read(4)
        if head in (b"", b"PK\x03\x04"):
            raise ModelLoadError(f"{str(path)!r} is corrupt or truncated (an incomplete zip archive)", str(path))
        raise ModelLoadError(
            f"{str(path)!r} is not a readable PyTorch zip archive (not a PyTorch file, or a legacy pre-zip one, "
            "which needs trust_pickle=True / --trust-pickle: only if you trust its source)",
            str(path),
        )
    try:
        return _restricted_load(path, pm)
    except UnsafePickleError as exc:
        if not trust_pickle:
            raise UnsafeCheckpointError(
                f"{str(path)!r} needs {exc}, which modprune's loader refuses (it only rebuilds tensors and "
                "allowlisted classes from stored state); if you trust its source, pass trust_pickle=True "
                "(CLI: --trust-pickle)",
                str(path),
            ) from None
    except ModpruneError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # the restricted unpickler ran no code of the file: any failure means a bad file
        raise ModelLoadError(
            f"{str(path)!r} is not a readable PyTorch file (corrupt or truncated?): {_first_line(exc)}", str(path)
        ) from None
    return _trusted_load(path)


def _restricted_load(path: Path, pm: ModpruneManager | None) -> Any:
    """``torch.load`` with :mod:`modprune.safe_pickle` as the unpickler."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if any(n.endswith("/constants.pkl") for n in names):  # torch.load would run torch.jit.load
            raise ModelLoadError(f"{str(path)!r} is a TorchScript archive; modprune reads eager models", str(path))
        declared = declared_classes(archive, path)
    module = pickle_module_for([*safe_globals(pm), *declared])
    # The guard here is pickle_module (modprune.safe_pickle.RestrictedUnpickler). torch.load accepts a
    # pickle_module only together with weights_only=False, which here selects that restricted unpickler
    # in place of torch's own weights-only one; it does not allow arbitrary pickles. The one unrestricted
    # load is _trusted_load, reached only with trust_pickle=True.
    return torch.load(path, map_location="cpu", pickle_module=module, weights_only=False)


def _trusted_load(path: Path) -> Any:
    """Full pickle, only after the user opted in with ``trust_pickle=True`` / ``--trust-pickle``."""
    log.warning("loading %s with full pickle: its code runs with your permissions", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # arbitrary pickles can fail in any way
        raise _TrustedLoadError(f"{str(path)!r} could not be loaded: {_first_line(exc)}", str(path)) from None


class _TrustedLoadError(ModelLoadError):
    """A PyTorch file failed to unpickle even with full pickle: no other reader can do better."""


def _check_zip_integrity(path: Path) -> None:
    """Verify the CRC-32 of every record of a (zip-based) PyTorch file.

    PyTorch does not check them when loading, so bytes flipped inside a tensor would otherwise load
    silently as wrong weights.
    """
    try:
        if not zipfile.is_zipfile(path):
            return  # legacy or not a PyTorch file: torch.load reports it
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelLoadError(f"{str(path)!r} is corrupt or truncated: {_first_line(exc)}", str(path)) from None
    if bad is not None:
        raise ModelLoadError(f"{str(path)!r} is corrupt: checksum mismatch in record {bad!r}", str(path))


def _first_line(exc: BaseException) -> str:
    """A short one-line reason: the first sentence of the first line of the message."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    return line.split(". ")[0].rstrip(".")[:200]


def load(path: str | os.PathLike[str], *, trust_pickle: bool = False, pm: ModpruneManager | None = None) -> nn.Module:
    """Load a model: a modprune file, or any format a plugin understands (ultralytics checkpoints
    and model yamls with the ultralytics integration). Returns an ``nn.Module`` in eval mode.
    """
    path = Path(path)
    is_yaml = path.suffix.lower() in _YAML_SUFFIXES
    if not (is_yaml and path.parent == Path(".") and not path.exists()):
        _check_readable(path)  # a bare yaml name may be a config a plugin ships
    _check_ultralytics_installed(path, is_yaml)
    pm = resolve(pm)
    if is_yaml and path.is_file() and not trust_pickle and not zipfile.is_zipfile(path):
        check_model_yaml(path, pm)  # a model yaml is code to ultralytics' parser: validate it first
    model = _load_any(path, trust_pickle, pm)
    if not trust_pickle:
        _check_embedded_yamls(model, path, pm)
    return model


def _check_ultralytics_installed(path: Path, is_yaml: bool) -> None:
    """A model yaml or a file whose pickle names ultralytics classes needs ultralytics: say how to get it."""
    if available("ultralytics"):
        return
    if is_yaml:
        raise missing_dependency_error("ultralytics", f"building {str(path)!r} (an ultralytics model yaml)")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith(".pkl")]
                mentions = any(b"ultralytics" in archive.read(n) for n in pickles)
        except (zipfile.BadZipFile, OSError, ValueError):
            return  # corrupt: load_file says so
        if mentions:
            raise missing_dependency_error("ultralytics", f"loading {str(path)!r} (it holds ultralytics classes)")


def _check_embedded_yamls(model: nn.Module, path: Path, pm: ModpruneManager) -> None:
    """Checkpoints carry their model yaml (``model.yaml``), which ultralytics rebuilds from when training."""
    for module in model.modules():
        cfg = module.__dict__.get("yaml")
        if is_model_cfg(cfg):
            validate_model_cfg(cfg, f"{str(path)!r} (its model yaml)", pm)


def _load_any(path: Path, trust_pickle: bool, pm: ModpruneManager) -> nn.Module:
    error: ModelLoadError | None = None  # why modprune itself cannot read the file, if it cannot
    if path.suffix.lower() not in _YAML_SUFFIXES or zipfile.is_zipfile(path):  # save() accepts any name
        try:
            obj = load_file(path, trust_pickle=trust_pickle, pm=pm)
        except ModelLoadError as exc:  # maybe a plugin's format (e.g. aliased classes): plugins get their turn
            error, obj = exc, None
        if isinstance(obj, dict) and "modprune_format" in obj:
            version = obj["modprune_format"]
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise ModelLoadError(
                    f"{str(path)!r} has modprune format {version!r}; this modprune reads format "
                    f"{FORMAT_VERSION} and older: upgrade modprune",
                    str(path),
                )
            model = obj.get("model")
            if not isinstance(model, nn.Module):
                raise ModelLoadError(f"{str(path)!r} holds no model", str(path))
            return model.eval()
        if isinstance(obj, nn.Module):
            return obj.eval()
    try:
        model = call_hook(pm, "modprune_load_model", path=path, trust_pickle=trust_pickle)
    except PluginError as exc:
        info = pm.plugin_info.get(exc.plugin)
        if info is None or not info.builtin:  # a third-party reader's bug: name it
            raise
        cause = exc.__cause__ or exc  # a built-in reader failing on a file it claimed: a bad file
        raise ModelLoadError(
            f"{str(path)!r} could not be read: {type(cause).__name__}: {_first_line(cause)}", str(path)
        ) from exc
    if not isinstance(model, nn.Module):
        if error is not None:
            raise error
        _check_readable(path)
        raise ModelLoadError(
            f"{str(path)!r} is not a model file modprune or its plugins can read "
            "(expected a modprune/ultralytics checkpoint or an ultralytics model yaml)",
            str(path),
        )
    return model.eval()
