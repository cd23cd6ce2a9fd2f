"""Compressed checkpoints for sparse (masked) models, stored in a standard safetensors file.

The file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file, so any safetensors
reader (``safetensors.torch.load_file``, ``safe_open``, the Rust or JS readers) opens it, and nothing in
it is ever unpickled or executed. Each tensor of the state dict takes whichever encoding is smaller:

* *dense*: stored under its own name, in the storage dtype;
* *sparse*: ``<name>.__mask__`` (``uint8``, ``np.packbits`` of the nonzero mask in row-major order) and
  ``<name>.__values__`` (the nonzero values, 1-D, in the storage dtype); for a floating tensor whose
  zeros include ``-0.0`` (what ``weight * mask`` leaves), also ``<name>.__negzero__`` (packed mask of
  the zeros that are ``-0.0``), so every bit round trips.
 The safetensors
metadata (string -> string) holds ``format`` (``modprune-sparse-state-dict``), ``version`` (``2``),
``tensors`` (JSON list, per tensor: name, dtype, stored dtype, shape, encoding, nnz), ``metadata`` (the
caller's JSON metadata) and ``data_sha256`` (SHA-256 of the tensor data, checked on load).

Floating tensors are stored as float16 by default (``dtype="float16"``); ``dtype="original"`` keeps
every tensor's own dtype. Loading returns tensors in their original dtype: bit-identical with
``dtype="original"``, equal to ``t.half().to(t.dtype)`` with float16 storage. The file is written to a
temporary name and moved into place with ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from modprune.exceptions import ConfigError, ModelLoadError, OutputPathError

__all__ = ["save_sparse_state_dict", "load_sparse_state_dict", "read_sparse_header", "FORMAT", "FORMAT_VERSION",
           "MASK_SUFFIX", "VALUES_SUFFIX", "NEGZERO_SUFFIX"]

LOG = logging.getLogger(__name__)

FORMAT = "modprune-sparse-state-dict"
FORMAT_VERSION = 2
MASK_SUFFIX = ".__mask__"
VALUES_SUFFIX = ".__values__"
NEGZERO_SUFFIX = ".__negzero__"
_MAX_HEADER = 256 * 2**20
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
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state_dict`` to ``path`` as a sparse safetensors file; return the path.

    Args:
        state_dict: Tensor name -> tensor (as from ``model.state_dict()``).
        path: Output file (``.safetensors`` by convention); replaced atomically.
        dtype: Storage dtype of floating tensors: ``"float16"`` (default), ``"original"``, or a torch
            floating dtype. Integer and bool tensors always keep their dtype.
        metadata: Optional JSON-serialisable mapping stored in the file's metadata.

    Raises:
        ConfigError: a value is not a tensor, a dtype is invalid, metadata is not JSON, a name collides
            with another tensor's sparse parts, or a value overflows float16 (use ``dtype="original"``).
        OutputPathError: the file cannot be written.
    """
    store = _storage_dtype(dtype)
    entries: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        _check_entry(name, tensor)
        parts, entry = _encode(name, tensor, store)
        for key, value in parts.items():
            if key in tensors or (key != name and key in state_dict):
                raise ConfigError(f"tensor name {key!r} is used twice (a tensor's sparse parts are named "
                                  f"<name>{MASK_SUFFIX} and <name>{VALUES_SUFFIX}); rename the tensor", obj=key)
            tensors[key] = value
        entries.append(entry)
    data = st_save(tensors, metadata={"format": FORMAT, "version": str(FORMAT_VERSION),
                                      "tensors": json.dumps(entries, separators=(",", ":")),
                                      "metadata": json.dumps(_json_metadata(metadata)), "data_sha256": ""})
    data = _with_checksum(tensors, entries, metadata, data)
    out = Path(path).expanduser()
    _atomic_write(out, data)
    LOG.debug("saved %d tensors to %s (%d bytes)", len(entries), out, len(data))
    return out


def load_sparse_state_dict(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
                           ) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_sparse_state_dict`; tensors come back in their original dtype.

    Raises:
        ModelLoadError: the file is missing, not in this format, truncated or corrupt.
    """
    header, data, src = _read(path)
    try:
        stored = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{str(src)!r} is not a readable safetensors file ({e})", obj=src) from e
    out: dict[str, torch.Tensor] = {}
    for entry in header["tensors"]:
        try:
            out[entry["name"]] = _decode(entry, stored).to(map_location)
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise ModelLoadError(f"{str(src)!r}: tensor {entry.get('name')!r} is corrupt ({e})", obj=src) from e
    return out


def read_sparse_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file's description without decoding tensors.

    Returns:
        ``{"format", "version", "tensors": [per-tensor dicts], "metadata": {caller's metadata}}``.
    """
    header, _, _ = _read(path)
    return header


# --------------------------------------------------------------------------------------------------


def _check_entry(name: Any, tensor: Any) -> None:
    if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
        raise ConfigError(f"state_dict entry {name!r} is a {type(tensor).__name__}; only str -> torch.Tensor "
                          "entries can be stored", obj=name)
    if tensor.is_sparse or tensor.is_quantized or _dtype_name(tensor.dtype) not in _DTYPES:
        raise ConfigError(f"tensor {name!r} has unsupported dtype/layout {tensor.dtype}/{tensor.layout}; "
                          f"supported dtypes: {sorted(_DTYPES)}", obj=name)


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


def _encode(name: str, tensor: torch.Tensor, store: torch.dtype | None
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The stored tensors of one state-dict entry (sparse or dense, whichever is smaller) and its entry."""
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
    nonzero, negzero = _nonzero(flat)
    nnz = int(nonzero.sum())
    entry = {"name": name, "dtype": _dtype_name(orig), "stored_dtype": _dtype_name(t.dtype),
             "shape": list(t.shape), "nnz": nnz}
    masks = 1 + (negzero is not None)
    if masks * math.ceil(n / 8) + nnz * item < n * item:
        parts = {name + MASK_SUFFIX: _pack(nonzero), name + VALUES_SUFFIX: flat[nonzero].clone()}
        if negzero is not None:
            parts[name + NEGZERO_SUFFIX] = _pack(negzero)
        entry["encoding"] = "sparse"
        return parts, entry
    entry["encoding"] = "dense"
    return {name: t.clone()}, entry


def _nonzero(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mask of the values to store, mask of the zeros that are -0.0 or None when there are none)."""
    if flat.is_floating_point():
        nonzero = flat != 0  # NaN counts as nonzero
        negzero = ~nonzero & torch.signbit(flat)
        return nonzero, negzero if bool(negzero.any()) else None
    bits = flat.view(_INT_VIEW[flat.element_size()]) if flat.dtype != torch.bool else flat.view(torch.uint8)
    return bits != 0, None


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.numpy()))


def _unpack(stored: Mapping[str, torch.Tensor], key: str, n: int) -> np.ndarray:
    packed = stored[key]
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(n / 8):
        raise ValueError(f"{key} does not match the shape")
    return np.unpackbits(packed.numpy(), count=n).astype(bool)


def _decode(entry: Mapping[str, Any], stored: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One state-dict tensor from its stored parts (see :func:`_encode`), in its original dtype."""
    name, dtype, orig = entry["name"], _parse_dtype(entry["stored_dtype"]), _parse_dtype(entry["dtype"])
    shape = [int(s) for s in entry["shape"]]
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    n = math.prod(shape)
    if entry["encoding"] == "dense":
        flat = stored[name]
        if flat.dtype != dtype or flat.numel() != n:
            raise ValueError(f"dense tensor is {flat.dtype} x {flat.numel()}, expected {dtype} x {n}")
    elif entry["encoding"] == "sparse":
        mask, values = _unpack(stored, name + MASK_SUFFIX, n), stored[name + VALUES_SUFFIX]
        if values.dtype != dtype or values.numel() != int(mask.sum()) or values.numel() != int(entry["nnz"]):
            raise ValueError("values do not match the mask")
        flat = torch.zeros(n, dtype=dtype)
        if name + NEGZERO_SUFFIX in stored:
            flat[torch.from_numpy(_unpack(stored, name + NEGZERO_SUFFIX, n))] = -0.0
        flat[torch.from_numpy(mask)] = values
    else:
        raise ValueError(f"unknown encoding {entry['encoding']!r}")
    return flat.reshape(shape).to(orig)


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


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(safetensors JSON header, tensor data bytes) of a safetensors file's bytes; ValueError if malformed."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (hlen,) = struct.unpack_from("<Q", data)
    if hlen > _MAX_HEADER or 8 + hlen > len(data):
        raise ValueError(f"header length {hlen} does not fit the file")
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, data[8 + hlen:]


def _with_checksum(tensors: Mapping[str, torch.Tensor], entries: list[dict[str, Any]],
                   metadata: Mapping[str, Any] | None, data: bytes) -> bytes:
    """Re-serialise with the SHA-256 of the tensor data in the metadata (the data bytes do not change)."""
    _, body = _split(data)
    return st_save(dict(tensors), metadata={
        "format": FORMAT, "version": str(FORMAT_VERSION), "tensors": json.dumps(entries, separators=(",", ":")),
        "metadata": json.dumps(_json_metadata(metadata)), "data_sha256": hashlib.sha256(body).hexdigest()})


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes, Path]:
    """Parse the file's metadata and verify the data checksum; return (description, file bytes, path)."""
    src = Path(path).expanduser()
    if not src.is_file():
        raise ModelLoadError(f"sparse checkpoint {str(src)!r} does not exist", obj=src)
    data = src.read_bytes()
    try:
        raw, body = _split(data)
        meta = raw.get("__metadata__") or {}
        if meta.get("format") != FORMAT:
            raise ModelLoadError(f"{str(src)!r} is not a modprune sparse checkpoint (no '{FORMAT}' metadata); "
                                 "load it with the loader for its own format", obj=src)
        if meta.get("version") != str(FORMAT_VERSION):
            raise ModelLoadError(f"{str(src)!r} is sparse format version {meta.get('version')}; this modprune "
                                 f"reads version {FORMAT_VERSION}; upgrade modprune", obj=src)
        header = {"format": FORMAT, "version": FORMAT_VERSION, "tensors": json.loads(meta["tensors"]),
                  "metadata": json.loads(meta["metadata"])}
        ok = isinstance(header["tensors"], list) and hashlib.sha256(body).hexdigest() == meta["data_sha256"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, struct.error) as e:
        raise ModelLoadError(f"{str(src)!r} is truncated or not a safetensors file ({e})", obj=src) from e
    if not ok:
        raise ModelLoadError(f"{str(src)!r} is truncated or corrupt (tensor data checksum mismatch)", obj=src)
    return header, data, src


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then ``os.replace`` it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputPathError(f"cannot write {str(path)!r} ({e}); choose a writable path", obj=path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputPathError(f"cannot write {str(path)!r} ({e}); choose a writable path", obj=path) from e
        raise
