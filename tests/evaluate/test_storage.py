"""Sparse checkpoints in safetensors: exact round trips, size goal, standard readers, corruption, no pickle."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safetensors import safe_open
from safetensors.torch import load_file

from modprune.evaluate.storage import (
    FORMAT,
    MASK_SUFFIX,
    VALUES_SUFFIX,
    load_sparse_state_dict,
    read_sparse_header,
    save_sparse_state_dict,
)
from modprune.exceptions import ConfigError, ModelLoadError


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN == NaN, -0.0 != 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def _sparsify(t: torch.Tensor, frac: float, gen: torch.Generator) -> torch.Tensor:
    keep = torch.rand(t.shape, generator=gen) >= frac
    return t * keep


def _model_like_state(sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """A conv-net-shaped state dict (~0.5M params) with unstructured sparsity on weights."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    chans = [3, 32, 64, 64, 128, 128]
    for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
        w = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        sd[f"model.{i}.conv.weight"] = _sparsify(w, sparsity, g)
        sd[f"model.{i}.bn.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
        sd[f"model.{i}.bn.bias"] = 0.1 * torch.randn(cout, generator=g)
        sd[f"model.{i}.bn.running_mean"] = torch.randn(cout, generator=g)
        sd[f"model.{i}.bn.running_var"] = torch.rand(cout, generator=g) + 0.5
        sd[f"model.{i}.bn.num_batches_tracked"] = torch.tensor(1234)
    sd["head.weight"] = _sparsify(torch.randn(80, 128 * 9, generator=g) * 0.02, sparsity, g)
    return sd


def test_exact_round_trip_original_dtypes(tmp_path: Path) -> None:
    sd = {
        "f32": torch.tensor([[0.0, -0.0, 1.5], [float("nan"), float("inf"), 0.0]]),
        "f64": torch.tensor([0.0, 1e-300, 0.0, -2.0], dtype=torch.float64),
        "f16": torch.tensor([0.0, 65504.0, 0.0, 0.0], dtype=torch.float16),
        "bf16": torch.tensor([0.0, 3.0, 0.0, 0.0], dtype=torch.bfloat16),
        "i64": torch.tensor(7),
        "i8": torch.tensor([0, -3, 0, 0, 0, 0, 0, 5], dtype=torch.int8),
        "u8": torch.zeros(17, dtype=torch.uint8),
        "bool": torch.tensor([True, False, False, False, False, False, False, False, False]),
        "empty": torch.empty(0, 3),
        "scalar": torch.tensor(2.5),
        "non_contiguous": torch.arange(1.0, 13.0).reshape(3, 4).t(),
    }
    p = save_sparse_state_dict(sd, tmp_path / "x.safetensors", dtype="original")
    back = load_sparse_state_dict(p)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert _bits_equal(back[k], v.contiguous()), k
    header = read_sparse_header(p)
    assert header["format"] == FORMAT
    enc = {t["name"]: t["encoding"] for t in header["tensors"]}
    assert enc["u8"] == "sparse" and enc["non_contiguous"] == "dense"


def test_float16_storage_equals_half_rounding(tmp_path: Path) -> None:
    sd = _model_like_state(0.5)
    back = load_sparse_state_dict(save_sparse_state_dict(sd, tmp_path / "h.safetensors"))
    for k, v in sd.items():
        expected = v.half().to(v.dtype) if v.is_floating_point() else v
        assert back[k].dtype == v.dtype
        assert _bits_equal(back[k], expected), k


def test_half_sparse_is_at_most_070_of_dense_fp16(tmp_path: Path) -> None:
    sd = _model_like_state(0.5)
    dense = tmp_path / "dense_fp16.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, dense)
    sparse = save_sparse_state_dict(sd, tmp_path / "sparse.safetensors")
    d, s = dense.stat().st_size, sparse.stat().st_size
    print(f"\n50% sparse: dense fp16 torch.save {d} B, sparse format {s} B, ratio {s / d:.3f}")
    assert s <= 0.7 * d


def test_sparsity_makes_files_smaller(tmp_path: Path) -> None:
    sizes = [save_sparse_state_dict(_model_like_state(f), tmp_path / f"s{f}.safetensors").stat().st_size
             for f in (0.0, 0.5, 0.9)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_other_storage_dtypes_and_metadata(tmp_path: Path) -> None:
    sd = {"w": torch.tensor([0.0, 1.0 / 3.0, 0.0])}
    back = load_sparse_state_dict(save_sparse_state_dict(sd, tmp_path / "b.safetensors", dtype=torch.bfloat16,
                                                         metadata={"sparsity": 0.5, "recipe": "demo"}))
    assert _bits_equal(back["w"], sd["w"].bfloat16().float())
    assert read_sparse_header(tmp_path / "b.safetensors")["metadata"] == {"sparsity": 0.5, "recipe": "demo"}


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = save_sparse_state_dict(_model_like_state(0.5), tmp_path / "np.safetensors")

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert len(load_sparse_state_dict(p)) == len(_model_like_state(0.5))


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path: Path) -> None:
    p = tmp_path / "a.safetensors"
    p.write_bytes(b"old")
    save_sparse_state_dict({"x": torch.ones(3)}, p)
    assert torch.equal(load_sparse_state_dict(p)["x"], torch.ones(3))
    assert [q.name for q in tmp_path.iterdir()] == ["a.safetensors"]


def test_failed_save_keeps_old_file(tmp_path: Path) -> None:
    p = tmp_path / "keep.safetensors"
    save_sparse_state_dict({"x": torch.ones(3)}, p)
    before = p.read_bytes()
    with pytest.raises(ConfigError, match="float16"):
        save_sparse_state_dict({"x": torch.tensor([1e6])}, p)  # overflows float16
    assert p.read_bytes() == before


@pytest.mark.parametrize("bad, match", [
    ({"x": [1.0]}, "only str -> torch.Tensor"),
    ({"x": torch.ones(2).to_sparse()}, "unsupported"),
    ({"x": torch.ones(2, dtype=torch.complex64)}, "unsupported"),
])
def test_bad_state_dicts(tmp_path: Path, bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        save_sparse_state_dict(bad, tmp_path / "bad.safetensors")


@pytest.mark.parametrize("kwargs", [{"dtype": "int8"}, {"dtype": "float8"}, {"metadata": {"x": object()}}])
def test_bad_options(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        save_sparse_state_dict({"x": torch.ones(2)}, tmp_path / "o.safetensors", **kwargs)


def test_corrupt_files_raise_model_load_error(tmp_path: Path) -> None:
    p = save_sparse_state_dict(_model_like_state(0.5), tmp_path / "c.safetensors")
    data = p.read_bytes()
    cases = {
        "missing": None,
        "length": (2**40).to_bytes(8, "little") + data[8:],
        "truncated": data[: len(data) // 2],
        "short": data[:5],
        "flipped": data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:],
        "header": data[:21] + b"\xff" + data[22:],
        "version": data.replace(b'"version":"2"', b'"version":"9"'),
        "foreign": _foreign_safetensors(),
    }
    for name, content in cases.items():
        q = tmp_path / f"{name}.safetensors"
        if content is not None:
            q.write_bytes(content)
        with pytest.raises(ModelLoadError):
            load_sparse_state_dict(q)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    sparsity=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.bool]),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, shape: list[int], sparsity: float,
                             dtype: torch.dtype, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g) * 10
    t = (t * (torch.rand(shape, generator=g) >= sparsity)).to(dtype)
    p = tmp_path_factory.mktemp("prop") / "t.safetensors"
    back = load_sparse_state_dict(save_sparse_state_dict({"t": t}, p, dtype="original"))
    assert _bits_equal(back["t"], t)


def _foreign_safetensors() -> bytes:
    from safetensors.torch import save
    return save({"w": torch.ones(3)}, metadata={"format": "pt"})


def test_any_safetensors_reader_opens_the_file(tmp_path: Path) -> None:
    sd = _model_like_state(0.5)
    p = save_sparse_state_dict(sd, tmp_path / "std.safetensors", metadata={"recipe": "demo"})
    plain = load_file(str(p))
    # dense tensors under their own names, sparse ones as a packed bitmask plus the nonzero values
    assert torch.equal(plain["model.0.bn.bias"], sd["model.0.bn.bias"].half())
    w = "model.1.conv.weight"
    assert w not in plain and plain[w + MASK_SUFFIX].dtype == torch.uint8
    assert plain[w + VALUES_SUFFIX].numel() == int((sd[w] != 0).sum())
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and json.loads(meta["metadata"]) == {"recipe": "demo"}
    entries = {e["name"]: e for e in json.loads(meta["tensors"])}
    assert entries[w]["encoding"] == "sparse" and entries[w]["shape"] == list(sd[w].shape)


def test_name_collision_with_sparse_parts_is_refused(tmp_path: Path) -> None:
    sd = {"w": torch.tensor([0.0] * 15 + [1.0]), "w" + MASK_SUFFIX: torch.ones(2)}
    with pytest.raises(ConfigError, match="used twice"):
        save_sparse_state_dict(sd, tmp_path / "c.safetensors")
