"""Property test: random pickles built from the allowlist and a few primitives never run code.

Each example is a random opcode sequence (GLOBAL of allowlisted and forbidden names, REDUCE, BUILD,
NEWOBJ, container opcodes, memo, primitives) in a PyTorch zip archive, read by modprune's loader.
It must either load or raise a ``ModpruneError``; while it loads, no constructor of a module class,
no sentinel, no ``eval``/``exec``/``os.system`` and no socket may run, and no ultralytics code at all.
"""

from __future__ import annotations

import builtins
import gc
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import torch
from torch import nn
from ultralytics.nn.modules import TorchVision
from ultralytics.nn.tasks import DetectionModel

import _models
from _hostile import global_op, torch_archive
from modprune import ModpruneError, hookimpl
from modprune.plugins import get_plugin_manager
from modprune.serialization import load_file

ALLOWED = [
    ("collections", "OrderedDict"),
    ("__builtin__", "set"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "float32"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch.nn.modules.conv", "Conv2d"),
    ("torch.nn.modules.container", "Sequential"),
    ("ultralytics.nn.tasks", "DetectionModel"),
    ("ultralytics.nn.modules.block", "TorchVision"),
    (_models.__name__, "Sentinel"),
    (_models.__name__, "SentinelList"),
    (_models.__name__, "SentinelNew"),
]
FORBIDDEN = [
    ("os", "system"),
    ("builtins", "eval"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("copyreg", "_reconstructor"),
    (_models.__name__, "sentinel_function"),
]
FORBIDDEN_C = {builtins.eval, builtins.exec, builtins.compile, os.system}


def _text(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


OPS = st.one_of(
    st.sampled_from(ALLOWED + FORBIDDEN).map(lambda g: global_op(*g)),
    st.integers(0, 255).map(lambda n: b"K" + bytes([n])),
    st.sampled_from(["", "nc", "weight", "forward", "_modules", "__class__", "resnet18"]).map(_text),
    st.sampled_from([b"N", b"\x88", b"\x89", b")", b"]", b"}", b"(", b"t", b"\x85", b"\x86", b"l", b"d"]),
    st.sampled_from([b"R", b"b", b"\x81", b"a", b"e", b"s", b"u", b"2", b"0"]),
    st.integers(0, 3).map(lambda n: b"q" + bytes([n])),
    st.integers(0, 3).map(lambda n: b"h" + bytes([n])),
)


class _Allow:
    @hookimpl
    def modprune_register_safe_globals(self) -> list[type]:
        return [_models.Sentinel, _models.SentinelNew, _models.SentinelList]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path, list[str]]]:
    """A plugin manager allowing the sentinels, a scratch path, and a log of code that must never run."""
    ran: list[str] = []
    originals = {cls: cls.__dict__["__init__"] for cls in (DetectionModel, TorchVision, nn.Module)}

    def recorder(cls: type) -> Any:
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            ran.append(f"{cls.__name__}.__init__")
            originals[cls](self, *args, **kwargs)

        return init

    pm = get_plugin_manager(plugins=[_Allow()])
    path = tmp_path_factory.mktemp("fuzz") / "f.pt"
    torch.save(nn.Conv2d(1, 1, 1), path)
    load_file(path, pm=pm)  # warm-up: lazy imports and the allowlist are built once, before tracing
    load_file(torch_archive(path, b"\x80\x02N."), pm=pm)  # (and the codec of zip names Python writes)
    real_connect = socket.socket.connect
    for cls in originals:
        cls.__init__ = recorder(cls)  # type: ignore[method-assign]
    socket.socket.connect = lambda self, address: ran.append("socket.connect")  # type: ignore[method-assign]
    gc.collect()  # finalizers of objects left by earlier tests run now, not inside a traced load
    gc.freeze()  # what survives is set aside: each example's collection then scans only its own garbage
    try:
        yield pm, path, ran
    finally:
        gc.unfreeze()
        for cls, init in originals.items():
            cls.__init__ = init  # type: ignore[method-assign]
        socket.socket.connect = real_connect  # type: ignore[method-assign]


def _profile(ran: list[str]) -> Any:
    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and ("ultralytics" in frame.f_code.co_filename or frame.f_code.co_filename == _models.__file__):
            ran.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")
        elif event == "c_call" and arg in FORBIDDEN_C:
            ran.append(repr(arg))

    return profile


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=24))
def test_random_pickles_run_no_code(guarded: tuple[Any, Path, list[str]], ops: list[bytes]) -> None:
    pm, path, ran = guarded
    torch_archive(path, b"\x80\x02" + b"".join(ops) + b".")
    _models.CALLS.clear()
    ran.clear()
    gc.collect()  # finalizers of the earlier examples' objects would otherwise run (and be seen) in the load
    gc.disable()
    sys.setprofile(_profile(ran))
    try:
        load_file(path, pm=pm)
    except ModpruneError:
        pass
    finally:
        sys.setprofile(None)
        gc.enable()
    assert ran == [] and _models.CALLS == []
