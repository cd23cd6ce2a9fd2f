"""Validation of ultralytics-style model yamls before any parser sees them.

ultralytics' parser evaluates a yaml's ``activation`` with ``eval`` and resolves each layer's module
name in its own module namespace (functions and loaders included), so a model yaml is code to it.
:func:`validate_model_cfg` accepts only:

* known top-level keys, each with a value of the expected kind (:data:`TOP_LEVEL_KEYS`);
* layer rows ``[from, repeats, module, args]`` whose ``module`` is ``nn.<torch layer>`` or a block
  that a plugin registers through ``modprune_register_model_modules`` (ultralytics' blocks, except
  the ``TorchVision`` wrapper, which downloads weights in its constructor);
* literal arguments: numbers, booleans, None, plain words (``nearest``, ``nc``) and strings holding a
  Python literal, in nested lists;
* ``activation`` of the form ``nn.<activation>(literal args)``.

Anything else raises :class:`~modprune.exceptions.UnsafeCheckpointError` naming the field
(``head[3][2]: module 'os.system' is not a known block``). ``trust_pickle=True`` / ``--trust-pickle``
skips the check.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml
from torch import nn

from modprune.exceptions import ModelLoadError, UnsafeCheckpointError
from modprune.plugins import ModpruneManager, resolve

__all__ = [
    "PRUNED_KEY",
    "PRUNED_SCALE",
    "TOP_LEVEL_KEYS",
    "check_model_yaml",
    "dense_cfg",
    "is_marked",
    "is_model_cfg",
    "known_modules",
    "marked_cfg",
    "validate_model_cfg",
]

_MAX_YAML_BYTES = 4 << 20
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def _number(v: Any) -> bool:
    return type(v) in (int, float)


def _int_list(v: Any) -> bool:
    return type(v) is list and all(type(x) is int for x in v)


def _scales(v: Any) -> bool:
    return isinstance(v, dict) and all(
        type(k) is str and type(s) is list and len(s) == 3 and all(_number(x) for x in s) for k, s in v.items()
    )


#: The ``scale`` of a pruned checkpoint's yaml: ultralytics looks it up before building anything, so stock
#: training stops with this sentence instead of rebuilding the unpruned network
#: (:mod:`modprune.integrations.ultralytics.retrain_guard`).
PRUNED_SCALE = (
    "pruned by modprune: this yaml builds the unpruned network, so ultralytics would train that instead; "
    "train the checkpoint itself with YOLO(path).train(trainer=PrunedModelTrainer) "
    "(from modprune.integrations.ultralytics.trainer) or modprune finetune"
)
#: Where a marked yaml keeps its own ``scale`` (and whether ``scales`` was added for the mark).
PRUNED_KEY = "modprune_pruned"


def _pruned_mark(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and set(v) == {"scale", "added_scales"}
        and (v["scale"] is None or (type(v["scale"]) is str and len(v["scale"]) <= 8))
        and type(v["added_scales"]) is bool
    )


#: Top-level key -> check of its value (the keys of ultralytics' bundled model yamls and what its parser reads).
TOP_LEVEL_KEYS: dict[str, Callable[[Any], bool]] = {
    "nc": lambda v: type(v) is int and v > 0,
    "scales": _scales,
    "scale": lambda v: type(v) is str and (len(v) <= 8 or v == PRUNED_SCALE),
    PRUNED_KEY: _pruned_mark,
    "depth_multiple": _number,
    "width_multiple": _number,
    "kpt_shape": _int_list,
    "channels": lambda v: type(v) is int and v > 0,
    "ch": lambda v: type(v) is int and v > 0,
    "end2end": lambda v: v is None or type(v) is bool,
    "reg_max": lambda v: type(v) is int and v > 0,
    "text_model": lambda v: type(v) is str and bool(_WORD.fullmatch(v.replace(":", "_"))),
    "yaml_file": lambda v: type(v) is str,
    "activation": lambda v: type(v) is str,
    "backbone": lambda v: type(v) is list,
    "head": lambda v: type(v) is list,
}


def _refuse(field: str, what: str, source: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{source}: {field}: {what}; model yamls may name only known blocks with literal arguments "
        "(if you trust this file, pass trust_pickle=True / --trust-pickle)",
        source,
    )


def known_modules(pm: ModpruneManager | None = None) -> dict[str, type]:
    """Module names a model yaml may use: ``nn.<Name>`` for torch layers and plugin-registered blocks."""
    names = {
        f"nn.{name}": obj
        for name, obj in inspect.getmembers(nn)
        if inspect.isclass(obj) and issubclass(obj, nn.Module)
    }
    for classes in resolve(pm).hook.modprune_register_model_modules():
        for cls in classes or []:
            if isinstance(cls, type) and issubclass(cls, nn.Module):
                names[cls.__name__] = cls
    return names


def _activations() -> set[str]:
    from torch.nn.modules import activation

    return {n for n, o in vars(activation).items() if inspect.isclass(o) and issubclass(o, nn.Module)} | {"Identity"}


def _check_activation(value: str, source: str) -> None:
    try:
        call = ast.parse(value.strip(), mode="eval").body
    except SyntaxError:
        raise _refuse("activation", f"{value!r} is not of the form nn.SiLU()", source) from None
    func = ast.unparse(call.func) if isinstance(call, ast.Call) else ""
    match = re.fullmatch(r"(?:torch\.)?nn\.(\w+)", func)
    if not match or match.group(1) not in _activations():
        raise _refuse("activation", f"{value!r} is not a known activation (nn.SiLU(), nn.ReLU(), ...)", source)
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        try:
            literal = ast.literal_eval(arg)
        except ValueError:
            raise _refuse("activation", f"{value!r} has a non-literal argument", source) from None
        if type(literal) not in (int, float, bool):
            raise _refuse("activation", f"{value!r} has a non-numeric argument", source)


def _check_arg(value: Any, field: str, source: str) -> None:
    if value is None or type(value) in (int, float, bool):
        return
    if type(value) is list:
        for i, item in enumerate(value):
            _check_arg(item, f"{field}[{i}]", source)
        return
    if type(value) is str:
        if _WORD.fullmatch(value):
            return
        try:
            literal = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise _refuse(field, f"string argument {value!r} is not a literal or a plain word", source) from None
        _check_arg(literal if type(literal) is not tuple else list(literal), field, source)
        return
    raise _refuse(field, f"argument of type {type(value).__name__} is not a literal", source)


def _check_from(value: Any) -> bool:
    return type(value) is int or (type(value) is list and bool(value) and all(type(x) is int for x in value))


def _check_row(row: Any, field: str, modules: Mapping[str, type], source: str) -> None:
    if type(row) is not list or len(row) != 4:
        raise _refuse(field, "a layer must be [from, repeats, module, args]", source)
    origin, repeats, module, args = row
    if not _check_from(origin):
        raise _refuse(f"{field}[0]", f"'from' {origin!r} is not a layer index or a list of them", source)
    if type(repeats) is not int or not 0 < repeats <= 1000:
        raise _refuse(f"{field}[1]", f"repeats {repeats!r} is not a positive integer", source)
    if type(module) is not str or module not in modules:
        raise _refuse(f"{field}[2]", f"module {module!r} is not a known block", source)
    if type(args) is not list:
        raise _refuse(f"{field}[3]", "arguments must be a list", source)
    _check_arg(args, f"{field}[3]", source)


def is_marked(cfg: Any) -> bool:
    """Whether the model dict ``cfg`` carries the pruned-checkpoint mark."""
    return isinstance(cfg, dict) and PRUNED_KEY in cfg


def marked_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` that ultralytics refuses to rebuild from (idempotent)."""
    if is_marked(cfg):
        return dict(cfg)
    out = dict(cfg)
    added = not cfg.get("scales")
    if added:  # ultralytics reads ``scale`` only when the yaml has ``scales``
        out["scales"] = {"dense": [cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0), float("inf")]}
    out[PRUNED_KEY] = {"scale": cfg.get("scale"), "added_scales": added}
    out["scale"] = PRUNED_SCALE
    return out


def dense_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without the mark: the yaml as it was before the model was pruned."""
    if not is_marked(cfg):
        return dict(cfg)
    out = dict(cfg)
    mark = out.pop(PRUNED_KEY)
    if mark.get("added_scales"):
        out.pop("scales", None)
    if mark.get("scale") is None:
        out.pop("scale", None)
    else:
        out["scale"] = mark["scale"]
    return out


def is_model_cfg(cfg: Any) -> bool:
    """Whether ``cfg`` looks like an ultralytics-style model dict (has ``backbone`` or ``head``)."""
    return isinstance(cfg, dict) and ("backbone" in cfg or "head" in cfg)


def validate_model_cfg(cfg: Any, source: str, pm: ModpruneManager | None = None) -> None:
    """Refuse a model dict that names anything but known blocks with literal arguments.

    :raises UnsafeCheckpointError: naming the first offending field.
    """
    if not isinstance(cfg, dict):
        raise _refuse("(top level)", "a model yaml must be a mapping", source)
    for key, value in cfg.items():
        check = TOP_LEVEL_KEYS.get(key) if type(key) is str else None
        if check is None:
            raise _refuse(str(key), "unknown top-level key", source)
        if not check(value):
            raise _refuse(key, f"value {value!r:.60} is not valid here", source)
    if "activation" in cfg:
        _check_activation(cfg["activation"], source)
    modules = known_modules(pm)
    for part in ("backbone", "head"):
        for i, row in enumerate(cfg.get(part) or []):
            _check_row(row, f"{part}[{i}]", modules, source)


def check_model_yaml(path: Path, pm: ModpruneManager | None = None) -> None:
    """Validate the model yaml file at ``path`` (plain YAML only: no tags that build Python objects)."""
    if path.stat().st_size > _MAX_YAML_BYTES:
        raise ModelLoadError(f"{str(path)!r} is too large for a model yaml", str(path))
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError:
        raise _refuse("(yaml)", "uses a YAML tag that builds a Python object", str(path)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"{str(path)!r} is not a readable yaml file: {type(exc).__name__}", str(path)) from None
    if is_model_cfg(cfg):
        validate_model_cfg(cfg, str(path), pm)
