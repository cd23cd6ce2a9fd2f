"""Helpers that craft hostile files for the adversarial loading tests."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class Call:
    """Pickles as ``func(*args)`` (a REDUCE of ``func``), whatever ``func`` is."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def torch_archive(path: Path, data_pkl: bytes, extra: dict[str, bytes] | None = None) -> Path:
    """A PyTorch zip archive whose pickle is ``data_pkl`` (records copied from a real torch.save)."""
    buffer = io.BytesIO()
    torch.save(torch.zeros(1), buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            name = info.filename
            if name.endswith("/data.pkl"):
                dst.writestr(name, data_pkl)
                for extra_name, content in (extra or {}).items():
                    dst.writestr(name.rsplit("/", 1)[0] + "/" + extra_name, content)
            elif "/data/" not in name:
                dst.writestr(name, src.read(name))
    return path


def dumps(obj: Any) -> bytes:
    """``pickle.dumps`` at torch.save's protocol."""
    return pickle.dumps(obj, protocol=2)


def global_op(module: str, name: str) -> bytes:
    """The raw GLOBAL opcode for ``module.name``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def raw_pickle(*parts: bytes) -> bytes:
    """A protocol-2 pickle made of raw opcodes, ending with STOP."""
    return b"\x80\x02" + b"".join(parts) + b"."
