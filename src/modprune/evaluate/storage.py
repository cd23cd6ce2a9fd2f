"""Compressed checkpoints for sparse (masked) models, with no pickle in the format.

File layout (all integers little-endian)::

    b"MPSPARSE"                 8-byte magic
    u32 version                 (1)
    u64 header_length
    header                      UTF-8 JSON: codec, payload sizes and SHA-256, and per tensor: name, dtype,
                                stored dtype, shape, encoding ("sparse" or "dense"), byte offset and length
    payload                     zlib or lzma stream of the concatenated tensor records

A *sparse* record is ``np.packbits`` of the nonzero mask followed by the nonzero values (raw bytes, in
row-major order); a *dense* record is the raw bytes. Each tensor takes whichever is smaller. "Zero" means
all bits zero, so ``-0.0`` is kept as a value and round trips bit-exactly.

Floating tensors are stored as float16 by default (``dtype="float16"``); ``dtype="original"`` keeps
every tensor's own dtype. Loading returns tensors in their original dtype: bit-identical with
``dtype="original"``, equal to ``t.half().to(t.dtype)`` with float16 storage. Loading reads JSON and raw
bytes only; nothing in the file is executed. The file is written to a temporary name and moved into
place with ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from modprune.exceptions import ConfigError, ModelLoadError, OutputPathError

__all__ = ["save_sparse_state_dict", "load_sparse_state_dict", "read_sparse_header", "MAGIC", "FORMAT_VERSION"]

LOG = logging.getLogger(__name__)

MAGIC = b"MPSPARSE"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIQ")
_MAX_HEADER = 256 * 2**20
_CODECS = ("zlib", "lzma")
_DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool)
}
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def save_sparse_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "float16",
    codec: str = "zlib",
    level: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state_dict`` to ``path`` in the sparse format; return the path.

    Args:
        state_dict: Tensor name -> tensor (as from ``model.state_dict()``).
        path: Output file; replaced atomically.
        dtype: Storage dtype of floating tensors: ``"float16"`` (default), ``"original"``, or a torch
            floating dtype. Integer and bool tensors always keep their dtype.
        codec: ``"zlib"`` (fast, default) or ``"lzma"`` (smaller, slower).
        level: Compression level (zlib 0-9, default 6; lzma preset 0-9, default 6).
        metadata: Optional JSON-serialisable mapping stored in the header.

    Raises:
        ConfigError: a value is not a tensor, a dtype/codec/level is invalid, metadata is not JSON, or a
            value overflows float16 (use ``dtype="original"``).
        OutputPathError: the file cannot be written.
    """
    store = _storage_dtype(dtype)
    if codec not in _CODECS:
        raise ConfigError(f"codec={codec!r} is not supported; use one of {_CODECS}", obj=codec)
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9):
        raise ConfigError(f"level={level!r} must be an integer in [0, 9] or None", obj=level)
    entries, chunks, offset = [], [], 0
    for name, tensor in state_dict.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"state_dict entry {name!r} is a {type(tensor).__name__}; only str -> torch.Tensor "
                              "entries can be stored", obj=name)
        if tensor.is_sparse or tensor.is_quantized or str(tensor.dtype).removeprefix("torch.") not in _DTYPES:
            raise ConfigError(f"tensor {name!r} has unsupported dtype/layout {tensor.dtype}/{tensor.layout}; "
                              f"supported dtypes: {sorted(_DTYPES)}", obj=name)
        record, entry = _encode(name, tensor, store)
        entry.update(offset=offset, length=len(record))
        offset += len(record)
        entries.append(entry)
        chunks.append(record)
    raw = b"".join(chunks)
    payload = _compress(raw, codec, level)
    header = {
        "format": "modprune-sparse-state-dict",
        "version": FORMAT_VERSION,
        "codec": codec,
        "raw_length": len(raw),
        "payload_length": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "tensors": entries,
        "metadata": _json_metadata(metadata),
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    out = Path(path).expanduser()
    _atomic_write(out, [_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes)), header_bytes, payload])
    LOG.info("saved %d tensors to %s (%d bytes, %s)", len(entries), out, out.stat().st_size, codec)
    return out


def load_sparse_state_dict(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
                           ) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_sparse_state_dict`; tensors come back in their original dtype.

    Raises:
        ModelLoadError: the file is missing, not in this format, truncated or corrupt.
    """
    header, payload, src = _read(path)
    raw = _decompress(payload, header["codec"], int(header["raw_length"]), src)
    out: dict[str, torch.Tensor] = {}
    for entry in header["tensors"]:
        try:
            start, length = int(entry["offset"]), int(entry["length"])
            if start < 0 or length < 0 or start + length > len(raw):
                raise ValueError("record outside the payload")
            out[entry["name"]] = _decode(entry, raw[start:start + length]).to(map_location)
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise ModelLoadError(f"{str(src)!r}: tensor record {entry.get('name')!r} is corrupt ({e})",
                                 obj=src) from e
    return out


def read_sparse_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a sparse checkpoint (tensor names, shapes, encodings, metadata) without decoding."""
    header, _, _ = _read(path)
    return header


# --------------------------------------------------------------------------------------------------


def _storage_dtype(dtype: str | torch.dtype) -> torch.dtype | None:
    """Parse the ``dtype`` argument: None means "each tensor's own dtype"."""
    if dtype == "original":
        return None
    if isinstance(dtype, str):
        parsed = _DTYPES.get(dtype.removeprefix("torch."))
    else:
        parsed = dtype if isinstance(dtype, torch.dtype) else None
    if parsed is None or not parsed.is_floating_point:
        raise ConfigError(f"dtype={dtype!r} must be 'original' or a floating dtype such as 'float16', "
                          "'bfloat16', 'float32'", obj=dtype)
    return parsed


def _encode(name: str, tensor: torch.Tensor, store: torch.dtype | None) -> tuple[bytes, dict[str, Any]]:
    """Bytes of one tensor (sparse or dense, whichever is smaller) and its header entry."""
    t = tensor.detach().to("cpu").contiguous()
    orig = t.dtype
    if store is not None and t.is_floating_point() and t.dtype != store:
        converted = t.to(store)
        if bool((torch.isinf(converted) & torch.isfinite(t)).any()):
            raise ConfigError(f"tensor {name!r} has values outside the {store} range; save with dtype='original'",
                              obj=name)
        t = converted
    flat = t.reshape(-1)
    n, item = flat.numel(), flat.element_size()
    bits = flat.view(_INT_VIEW[item]) if flat.dtype != torch.bool else flat.view(torch.uint8)
    nonzero = bits != 0
    nnz = int(nonzero.sum())
    dense_size, sparse_size = n * item, math.ceil(n / 8) + nnz * item
    entry = {"name": name, "dtype": _dtype_name(orig), "stored_dtype": _dtype_name(t.dtype),
             "shape": list(t.shape), "nnz": nnz}
    if sparse_size < dense_size:
        mask = np.packbits(nonzero.numpy()).tobytes()
        values = flat[nonzero].contiguous().view(torch.uint8).numpy().tobytes()
        entry["encoding"] = "sparse"
        return mask + values, entry
    entry["encoding"] = "dense"
    return flat.view(torch.uint8).numpy().tobytes() if n else b"", entry


def _decode(entry: Mapping[str, Any], record: bytes) -> torch.Tensor:
    """Tensor from one record (see :func:`_encode`), cast back to its original dtype."""
    stored, orig = _parse_dtype(entry["stored_dtype"]), _parse_dtype(entry["dtype"])
    shape = [int(s) for s in entry["shape"]]
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    n = math.prod(shape)
    item = torch.empty((), dtype=stored).element_size()
    if entry["encoding"] == "dense":
        if len(record) != n * item:
            raise ValueError(f"dense record has {len(record)} bytes, expected {n * item}")
        flat = _from_bytes(record, stored, n)
    elif entry["encoding"] == "sparse":
        mlen = math.ceil(n / 8)
        mask = np.unpackbits(np.frombuffer(record[:mlen], dtype=np.uint8), count=n).astype(bool)
        nnz = int(mask.sum())
        if len(record) != mlen + nnz * item or nnz != int(entry["nnz"]):
            raise ValueError("sparse record length does not match its mask")
        flat = torch.zeros(n, dtype=stored)
        flat[torch.from_numpy(mask)] = _from_bytes(record[mlen:], stored, nnz)
    else:
        raise ValueError(f"unknown encoding {entry['encoding']!r}")
    return flat.reshape(shape).to(orig)


def _from_bytes(data: bytes, dtype: torch.dtype, count: int) -> torch.Tensor:
    """A new tensor of ``count`` elements of ``dtype`` from raw bytes (copied, so it owns its memory)."""
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype, count=count)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _parse_dtype(name: Any) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}")
    return _DTYPES[name]


def _json_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metadata as a JSON-safe dict (checked by a dump/load round trip)."""
    if metadata is None:
        return {}
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"metadata must be JSON-serialisable (str keys, numbers, strings, lists): {e}",
                          obj=metadata) from e


def _compress(raw: bytes, codec: str, level: int | None) -> bytes:
    if codec == "zlib":
        return zlib.compress(raw, 6 if level is None else level)
    return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=6 if level is None else level)


def _decompress(payload: bytes, codec: Any, raw_length: int, src: Path) -> bytes:
    """Decompress at most ``raw_length`` bytes (guards against decompression bombs) and check the length."""
    try:
        if codec == "zlib":
            d = zlib.decompressobj()
            raw = d.decompress(payload, raw_length + 1)
        elif codec == "lzma":
            d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            raw = d.decompress(payload, max_length=raw_length + 1)
        else:
            raise ModelLoadError(f"{str(src)!r}: unknown codec {codec!r}", obj=src)
    except (zlib.error, lzma.LZMAError) as e:
        raise ModelLoadError(f"{str(src)!r}: payload does not decompress ({e}); the file is corrupt", obj=src) from e
    if len(raw) != raw_length:
        raise ModelLoadError(f"{str(src)!r}: payload is {len(raw)} bytes, header says {raw_length}; the file is "
                             "corrupt", obj=src)
    return raw


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes, Path]:
    """Parse and verify preamble, header and payload checksum."""
    src = Path(path).expanduser()
    if not src.is_file():
        raise ModelLoadError(f"sparse checkpoint {str(src)!r} does not exist", obj=src)
    data = src.read_bytes()
    if len(data) < _PREAMBLE.size or data[:8] != MAGIC:
        raise ModelLoadError(f"{str(src)!r} is not a modprune sparse checkpoint (bad magic); load it with the "
                             "loader for its own format", obj=src)
    _, version, hlen = _PREAMBLE.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ModelLoadError(f"{str(src)!r} is sparse format version {version}; this modprune reads version "
                             f"{FORMAT_VERSION}; upgrade modprune", obj=src)
    if hlen > _MAX_HEADER or _PREAMBLE.size + hlen > len(data):
        raise ModelLoadError(f"{str(src)!r} is truncated (header length {hlen})", obj=src)
    try:
        header = json.loads(data[_PREAMBLE.size:_PREAMBLE.size + hlen].decode("utf-8"))
        payload = data[_PREAMBLE.size + hlen:]
        ok = (isinstance(header, dict) and isinstance(header.get("tensors"), list)
              and len(payload) == int(header["payload_length"])
              and hashlib.sha256(payload).hexdigest() == header["payload_sha256"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{str(src)!r}: header is corrupt ({e})", obj=src) from e
    if not ok:
        raise ModelLoadError(f"{str(src)!r} is truncated or corrupt (payload length or checksum mismatch)", obj=src)
    return header, payload, src


def _atomic_write(path: Path, parts: list[bytes]) -> None:
    """Write ``parts`` to a temporary file beside ``path``, fsync, then ``os.replace`` it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputPathError(f"cannot write {str(path)!r} ({e}); choose a writable path", obj=path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputPathError(f"cannot write {str(path)!r} ({e}); choose a writable path", obj=path) from e
        raise
