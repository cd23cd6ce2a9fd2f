"""modprune's restricted unpickler: a file can rebuild tensors and objects from stored state, nothing more.

This module is the guard behind :func:`modprune.serialization.load_file`. It is handed to ``torch.load``
as ``pickle_module``; PyTorch then reads the zip archive and its tensor records as usual, and every
pickle opcode goes through :class:`RestrictedUnpickler`, which is built on the pure-Python unpickler
with its own dispatch table:

* **Globals** (``GLOBAL``/``STACK_GLOBAL``) resolve only to objects in an allowlist, by identity:
  torch's tensor and storage rebuild functions, dtypes and a few plain builtins (:data:`_CALLABLES`),
  and the *state classes* given to the unpickler (PyTorch layers, plugin registrations, classes a
  modprune file declares). Nothing is imported: a name is looked up in modules already imported,
  without calling a module ``__getattr__``.
* **Calls** (``REDUCE``) run only the allowlisted functions, each with its arguments checked, and
  look up an allowlisted enum's existing member by its plain value
  (for example a tensor's backward hooks must be empty). A state class "called" with no arguments,
  as ``NEWOBJ`` does, is created with the ``__new__`` of a built-in type: its ``__init__``, which may
  read files, evaluate strings or download weights, never runs. A state class called with arguments
  is refused: that is the constructor-call attack.
* **State** (``BUILD``) is set by updating the instance ``__dict__``; a ``__setstate__`` runs only
  when PyTorch defines it (``nn.Module`` and its torch subclasses). State that would shadow a method
  (``forward``) with a callable, install hooks, or store a function or a non-torch class as an attribute is refused.
* **Containers**: ``APPEND``/``SETITEM``/``ADDITEMS`` act only on plain ``list``/``dict``/``set`` (and
  ``OrderedDict``), never on an object's own ``append`` or ``__setitem__``; keys and set members
  must be plain values, so no object's ``__hash__`` runs.
* ``INST``, ``OBJ``, ``NEWOBJ_EX`` with arguments, the extension registry and persistent ids other
  than PyTorch storage records are refused.

Every refusal raises :class:`pickle.UnpicklingError` with a reason; the loader turns it into a
:class:`~modprune.exceptions.UnsafeCheckpointError`.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import enum
import functools
import inspect
import pickle
import sys
import types
from typing import Any, Callable, Iterable

import torch
from torch import nn

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "pickle_module_for"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something the restricted unpickler does not do; ``name`` is what it asked for."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


_PLAIN = (str, int, float, bool, bytes, type(None), torch.dtype)


def _is_plain(value: Any) -> bool:
    """A value whose hashing and comparison run no code of a pickled class (tuples of such, too)."""
    if type(value) is tuple:
        return all(_is_plain(v) for v in value)
    return type(value) in _PLAIN


def _fail(what: str, name: str) -> UnsafePickleError:
    return UnsafePickleError(what, name)


# --- allowlisted callables and their argument checks ------------------------------------------


def _rebuild_functions() -> set[Callable[..., Any]]:
    """torch's tensor rebuild functions that build from storages and plain values only."""
    names = (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_nested_tensor",
        "_rebuild_device_tensor_from_cpu_tensor",
    )
    return {getattr(torch._utils, n) for n in names if hasattr(torch._utils, n)}


@functools.lru_cache(maxsize=None)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


def _check_rebuild(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        bound = _signature(func).bind(*args)
    except TypeError:
        raise _fail(f"{func.__name__} called with the wrong arguments", func.__name__) from None
    hooks = bound.arguments.get("backward_hooks")
    if hooks:  # torch.save never stores hooks; a file that does would make backward() call them
        raise _fail(f"{func.__name__} with backward hooks", func.__name__)


def _check_plain_args(kinds: tuple[type, ...]) -> Callable[[Callable[..., Any], tuple[Any, ...]], None]:
    def check(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not all(isinstance(a, kinds) for a in args):
            raise _fail(f"{getattr(func, '__name__', func)} with unexpected arguments", str(func))

    return check


def _check_collection(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if len(args) > 1 or (args and not (type(args[0]) in (list, tuple) and all(_is_plain(v) for v in args[0]))):
        raise _fail(f"{func.__name__} of values other than plain keys", func.__name__)


def _check_empty(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if args:
        raise _fail(f"{func.__name__} with arguments", func.__name__)


def _check_size(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if len(args) != 1 or type(args[0]) not in (list, tuple) or not all(type(v) is int for v in args[0]):
        raise _fail("torch.Size of values other than integers", "torch.Size")


def _check_encode(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if len(args) != 2 or type(args[0]) is not str or args[1] != "latin1":
        raise _fail("_codecs.encode other than of latin1 text (how protocol 2 stores bytes)", "_codecs.encode")


@functools.lru_cache(maxsize=1)
def _callables() -> dict[str, tuple[Any, Callable[[Any, tuple[Any, ...]], None]]]:
    """``'module.name'`` -> (object, argument check) for every function a pickle may call."""
    table: dict[str, tuple[Any, Callable[[Any, tuple[Any, ...]], None]]] = {
        "collections.OrderedDict": (collections.OrderedDict, _check_empty),
        "builtins.set": (set, _check_collection),
        "builtins.frozenset": (frozenset, _check_collection),
        "builtins.complex": (complex, _check_plain_args((int, float))),
        "builtins.bytearray": (bytearray, _check_plain_args((bytes, str))),
        "_codecs.encode": (codecs.encode, _check_encode),
        "torch.Size": (torch.Size, _check_size),
        "torch.device": (torch.device, _check_plain_args((str, int))),
        "torch.serialization._get_layout": (torch.serialization._get_layout, _check_plain_args((str,))),
    }
    for func in _rebuild_functions():
        table[f"torch._utils.{func.__name__}"] = (func, _check_rebuild)
    table["torch._tensor._rebuild_from_type_v2"] = (torch._tensor._rebuild_from_type_v2, _check_from_type)
    return table


def _check_from_type(func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if len(args) != 4:
        raise _fail("_rebuild_from_type_v2 with the wrong arguments", "_rebuild_from_type_v2")
    inner, new_type, inner_args, state = args
    if inner not in _rebuild_functions() or new_type not in (torch.Tensor, nn.Parameter):
        raise _fail("_rebuild_from_type_v2 of something other than a tensor", "_rebuild_from_type_v2")
    if type(inner_args) is not tuple or not isinstance(state, (dict, type(None))):
        raise _fail("_rebuild_from_type_v2 with the wrong arguments", "_rebuild_from_type_v2")
    _check_rebuild(inner, inner_args)
    if state and not all(type(k) is str and not k.startswith("__") for k in state):
        raise _fail("_rebuild_from_type_v2 with unusual tensor attributes", "_rebuild_from_type_v2")


@functools.lru_cache(maxsize=1)
def _plain_values() -> dict[str, Any]:
    """Non-callable globals a checkpoint may name: dtypes, quantization schemes, tensor classes."""
    values: dict[str, Any] = {}
    for obj in vars(torch).values():
        if isinstance(obj, (torch.dtype, torch.qscheme, torch.layout, torch.memory_format)):
            values[f"torch.{str(obj).replace('torch.', '')}"] = obj
    values["torch.Tensor"] = torch.Tensor
    values["torch.nn.parameter.Parameter"] = nn.Parameter
    return values


# --- building objects from state ---------------------------------------------------------------


def _enum_member(cls: Any, args: tuple[Any, ...]) -> Any:
    """An allowlisted enum's existing member by its plain value (``Format('NCHW')``); no code of the
    enum runs (its ``_missing_`` neither): an unknown value is refused."""
    if len(args) != 1 or type(args[0]) not in (str, int):
        raise _fail(f"a call of {_name_of(cls)} with other than one plain value", _name_of(cls))
    member = cls._value2member_map_.get(args[0])
    if member is None:
        raise _fail(f"an unknown member {args[0]!r} of {_name_of(cls)}", _name_of(cls))
    return member


def _blank(cls: type) -> Any:
    """``cls`` created without running any Python code of it (no ``__init__``, no Python ``__new__``)."""
    for klass in cls.__mro__:
        new = klass.__dict__.get("__new__")
        if new is None:
            continue
        if not isinstance(new, types.BuiltinFunctionType):  # a __new__ written in Python
            raise _fail(f"{_name_of(cls)} defines its own __new__", _name_of(cls))
        return new(cls)
    raise _fail(f"{_name_of(cls)} cannot be created", _name_of(cls))  # pragma: no cover - object has __new__


def _name_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _torch_code(func_owner: type) -> bool:
    return func_owner.__module__.split(".")[0] == "torch"


def _setstate_owner(cls: type) -> type | None:
    """The class in ``cls``'s MRO that defines ``__setstate__``, or None."""
    for klass in cls.__mro__:
        if "__setstate__" in klass.__dict__:
            return klass
    return None


_ROUTINES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    staticmethod,
    classmethod,
    property,
)
_CONTAINER_TYPES = {"_modules": nn.Module, "_parameters": nn.Parameter, "_buffers": torch.Tensor}


def _check_value(cls: type, key: str, value: Any, depth: int = 0) -> None:
    """Attribute values may be data, tensors and objects, never functions or non-torch classes."""
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)):
        raise _fail(f"{_name_of(cls)}.{key} would hold a function", f"{_name_of(cls)}.{key}")
    if isinstance(value, type) and not _torch_code(value):
        raise _fail(f"{_name_of(cls)}.{key} would hold the class {_name_of(value)}", _name_of(value))
    if depth == 0 and type(value) in (list, tuple, dict, collections.OrderedDict):
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            _check_value(cls, key, item, depth + 1)


def _check_state(cls: type, state: Any) -> dict[str, Any]:
    if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
        state = state[0]
    if not isinstance(state, dict) or not all(type(k) is str for k in state):
        raise _fail(f"state of {_name_of(cls)} is not a plain attribute dict", _name_of(cls))
    for key, value in state.items():
        if callable(value) and isinstance(inspect.getattr_static(cls, key, None), _ROUTINES):
            raise _fail(f"state of {_name_of(cls)} would replace its method {key!r}", f"{_name_of(cls)}.{key}")
        if "hooks" in key and value is not None and (not hasattr(value, "__len__") or len(value)):
            raise _fail(f"state of {_name_of(cls)} installs hooks ({key})", f"{_name_of(cls)}.{key}")
        kind = _CONTAINER_TYPES.get(key)
        if kind is not None and isinstance(cls, type) and issubclass(cls, nn.Module):
            if not isinstance(value, dict) or not all(v is None or isinstance(v, kind) for v in value.values()):
                raise _fail(f"{_name_of(cls)}.{key} holds something other than {kind.__name__}s", _name_of(cls))
        _check_value(cls, key, value)
    return state


def _build(inst: Any, state: Any) -> None:
    cls = type(inst)
    state = _check_state(cls, state)
    owner = _setstate_owner(cls)
    if owner is not None and _torch_code(owner):
        inst.__setstate__(state)  # PyTorch's own code (nn.Module, RNNs, ...): fills defaults, nothing more
        return
    inst.__dict__.update(state)


# --- the unpickler -----------------------------------------------------------------------------

_DISPATCH = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]


def _refuse(opcode: str) -> Callable[[Any], None]:
    def refuse(self: Any) -> None:
        raise _fail(f"pickle opcode {opcode} (runs code or reads the extension registry)", opcode)

    return refuse


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """A pure-Python unpickler that only rebuilds tensors, plain containers and objects from state.

    ``state_classes`` are the classes it may create (without ``__init__``) and fill from stored
    state. See the module docstring for exactly what it allows.
    """

    dispatch = dict(_DISPATCH)
    _state_classes: frozenset[type] = frozenset()

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in _callables():
            return _callables()[full][0]
        if full in _plain_values():
            return _plain_values()[full]
        obj = self._by_name().get(full)
        if obj is None:  # an alias (a legacy path) of an allowed class, in a module already imported
            mod = sys.modules.get(module)
            candidate = vars(mod).get(name) if mod is not None else None
            if isinstance(candidate, type) and candidate in self._state_classes:
                obj = candidate
        if obj is None:
            raise _fail(f"global {full}", full)
        return obj

    @classmethod
    @functools.lru_cache(maxsize=8)
    def _by_name_for(cls, classes: frozenset[type]) -> dict[str, type]:
        return {f"{c.__module__}.{c.__qualname__}": c for c in classes}

    def _by_name(self) -> dict[str, type]:
        return self._by_name_for(self._state_classes)

    def _call(self, func: Any, args: Any) -> Any:
        if type(args) is not tuple:
            raise _fail("a call whose arguments are not a tuple", "REDUCE")
        if isinstance(func, enum.EnumMeta) and func in self._state_classes:
            return _enum_member(func, args)
        if isinstance(func, type) and func in self._state_classes:
            if args:  # calling an allowlisted class with arguments = running its constructor
                raise _fail(f"a call of {_name_of(func)} with arguments (its constructor)", _name_of(func))
            return _blank(func)
        for entry, check in _callables().values():
            if entry is func:
                check(func, args)
                return func(*args)
        raise _fail(f"a call of {_name_of(func)}", _name_of(func))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, type) and cls in self._state_classes) or args != ():
            raise _fail(f"creating {_name_of(cls)}", _name_of(cls))
        self.append(_blank(cls))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        if kwargs:
            raise _fail("NEWOBJ_EX with keyword arguments", "NEWOBJ_EX")
        self.load_newobj()

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) not in self._state_classes:
            raise _fail(f"setting the state of a {_name_of(type(inst))}", _name_of(type(inst)))
        _build(inst, state)

    def load_binpersid(self) -> None:
        pid = self.stack.pop()
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage" and type(pid[2]) is str):
            raise _fail("a persistent id other than a PyTorch storage record", "BINPERSID")
        self.append(self.persistent_load(pid))

    def _container(self, kinds: tuple[type, ...], opcode: str) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds:
            raise _fail(f"{opcode} on a {_name_of(type(target))} (only plain containers)", opcode)
        return target

    def load_append(self) -> None:
        value = self.stack.pop()
        self._container((list,), "APPEND").append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._container((list,), "APPENDS").extend(items)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._setitems([key, value], "SETITEM")

    def load_setitems(self) -> None:
        self._setitems(self.pop_mark(), "SETITEMS")

    def _setitems(self, items: list[Any], opcode: str) -> None:
        target = self._container((dict, collections.OrderedDict), opcode)
        _check_keys(items[0::2], opcode)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        _check_keys(items, "ADDITEMS")
        self._container((set,), "ADDITEMS").update(items)

    def load_dict(self) -> None:
        items = self.pop_mark()
        _check_keys(items[0::2], "DICT")
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        _check_keys(items, "FROZENSET")
        self.append(frozenset(items))


def _check_keys(keys: Iterable[Any], opcode: str) -> None:
    if not all(_is_plain(k) for k in keys):
        raise _fail(f"{opcode} with a key that is not a plain value", opcode)


def _install_dispatch() -> None:
    table = RestrictedUnpickler.dispatch
    methods = {
        pickle.REDUCE: RestrictedUnpickler.load_reduce,
        pickle.NEWOBJ: RestrictedUnpickler.load_newobj,
        pickle.NEWOBJ_EX: RestrictedUnpickler.load_newobj_ex,
        pickle.BUILD: RestrictedUnpickler.load_build,
        pickle.BINPERSID: RestrictedUnpickler.load_binpersid,
        pickle.APPEND: RestrictedUnpickler.load_append,
        pickle.APPENDS: RestrictedUnpickler.load_appends,
        pickle.SETITEM: RestrictedUnpickler.load_setitem,
        pickle.SETITEMS: RestrictedUnpickler.load_setitems,
        pickle.ADDITEMS: RestrictedUnpickler.load_additems,
        pickle.DICT: RestrictedUnpickler.load_dict,
        pickle.FROZENSET: RestrictedUnpickler.load_frozenset,
    }
    for opcode, method in methods.items():
        table[opcode[0]] = method
    for name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID"):
        table[getattr(pickle, name)[0]] = _refuse(name)


_install_dispatch()


def pickle_module_for(state_classes: Iterable[type]) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose ``Unpickler`` is restricted to ``state_classes``.

    ``torch.load`` needs ``weights_only=False`` to accept a ``pickle_module``; with this module that
    switches PyTorch's own restricted unpickler for this one, which is at least as strict.
    """
    classes = frozenset(c for c in state_classes if isinstance(c, type))

    class Unpickler(RestrictedUnpickler):
        _state_classes = classes

    def load(*_args: Any, **_kwargs: Any) -> Any:
        raise _fail("a legacy (pre-zip) PyTorch file", "legacy format")

    return types.SimpleNamespace(
        __name__=__name__, Unpickler=Unpickler, load=load, UnpicklingError=pickle.UnpicklingError
    )
