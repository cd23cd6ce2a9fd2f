"""save/load: exact round trips, the weights-only allowlist, readable errors, atomic writes."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

import modprune
from modprune import ModelLoadError, OutputPathError, PruneConfig, UnsafeCheckpointError
from modprune.measure.walk import effective_parameters
from modprune.pruners.masks import has_masks


class Custom(nn.Module):
    """Not allowlisted: loading a file that holds it needs trust_pickle."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def assert_same_model(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_is_exact(cnn: nn.Module, image: torch.Tensor, tmp_path: Path) -> None:
    modprune.prune(cnn, PruneConfig(target=0.5))
    path = modprune.save(cnn, tmp_path / "m.pt", metadata={"note": "x"})
    loaded = modprune.load(path)
    assert not loaded.training
    assert_same_model(cnn, loaded, image)
    raw = torch.load(path, weights_only=False)
    assert raw["modprune_format"] == 1 and raw["metadata"]["note"] == "x" and "modprune_version" in raw["metadata"]
    assert files(tmp_path) == ["m.pt"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_round_trip_of_a_masked_model(cnn: nn.Module, image: torch.Tensor, tmp_path: Path) -> None:
    optimizer = torch.optim.SGD(cnn.parameters(), lr=0.1)
    modprune.prune(cnn, PruneConfig(target=0.5, pruner_options={"permanent": False}))
    masked_weight = cnn[0].weight.detach().clone()
    params_before = list(cnn.parameters())
    modprune.save(cnn, tmp_path / "masked.pt")
    loaded = modprune.load(tmp_path / "masked.pt")
    assert not has_masks(loaded)  # masks are baked into the saved weights...
    assert torch.equal(loaded[0].weight, masked_weight)
    cnn.eval()
    assert torch.equal(loaded(image), cnn(image))
    assert has_masks(cnn)  # ...and the live model keeps them, with the same parameter objects
    assert list(cnn.parameters()) == params_before
    cnn.train()
    optimizer.zero_grad()
    cnn(image).sum().backward()
    optimizer.step()
    assert torch.equal(cnn[0].weight == 0, masked_weight == 0)


def test_own_files_round_trip_their_declared_classes(tmp_path: Path, image: torch.Tensor) -> None:
    """modprune.save records the importable module classes it needs; load rebuilds them without trust."""
    model = nn.Sequential(Custom())
    modprune.save(model, tmp_path / "custom.pt")
    assert_same_model(model, modprune.load(tmp_path / "custom.pt"), image)


def test_load_refuses_unknown_classes_unless_trusted(tmp_path: Path, image: torch.Tensor) -> None:
    """A file without modprune's class manifest gets the registered allowlist only."""
    model = nn.Sequential(Custom())
    torch.save({"modprune_format": 1, "metadata": {}, "model": model}, tmp_path / "custom.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"Custom.*trust_pickle"):
        modprune.load(tmp_path / "custom.pt")
    loaded = modprune.load(tmp_path / "custom.pt", trust_pickle=True)
    assert_same_model(model, loaded, image)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_raw_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelLoadError):
        modprune.load(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "corrupt or truncated"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a PyTorch"),
        (b"hello, I am text\n", "not a readable PyTorch"),
        (b"PK\x03\x04" + bytes(40), "corrupt or truncated"),
    ],
    ids=["empty", "png", "text", "zip-header"],
)
def test_files_that_are_not_models(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match) as info:
        modprune.load(path)
    assert "\n" not in str(info.value) and "bad.pt" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_file(cnn: nn.Module, tmp_path: Path, keep: float) -> None:
    modprune.save(cnn, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError, match="cut.pt"):
        modprune.load(tmp_path / "cut.pt")


def test_corrupted_bytes_never_load_as_different_weights(cnn: nn.Module, tmp_path: Path) -> None:
    """PyTorch does not check its zip records' CRCs; modprune does, so flipped bytes in a tensor raise."""
    modprune.save(cnn, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    state = cnn.state_dict()
    raised = 0
    for offset in range(0, len(data) - 16, len(data) // 25):
        corrupt = bytearray(data)
        corrupt[offset : offset + 16] = bytes(b ^ 0x5A for b in corrupt[offset : offset + 16])
        (tmp_path / "bad.pt").write_bytes(bytes(corrupt))
        try:
            loaded = modprune.load(tmp_path / "bad.pt").state_dict()
        except ModelLoadError:
            raised += 1
            continue
        assert all(torch.equal(state[k], loaded[k]) for k in state), f"silent corruption at byte {offset}"
    assert raised >= 20


def test_paths_that_are_not_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="directory"):
        modprune.load(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        modprune.load(tmp_path / "missing.pt")
    (tmp_path / "model.yaml").write_text("not: a model\n")
    with pytest.raises(ModelLoadError):
        modprune.load(tmp_path / "model.yaml")


def test_files_holding_no_model(tmp_path: Path) -> None:
    torch.save({"weight": torch.ones(3)}, tmp_path / "sd.pt")
    with pytest.raises(ModelLoadError, match="not a model file"):
        modprune.load(tmp_path / "sd.pt")
    torch.save({"modprune_format": 1, "metadata": {}, "model": torch.ones(2)}, tmp_path / "nomodel.pt")
    with pytest.raises(ModelLoadError, match="holds no model"):
        modprune.load(tmp_path / "nomodel.pt")
    torch.save({"modprune_format": 99, "metadata": {}, "model": nn.Linear(1, 1)}, tmp_path / "future.pt")
    with pytest.raises(ModelLoadError, match="format 99"):
        modprune.load(tmp_path / "future.pt")


def test_a_bare_module_file_loads(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 3), tmp_path / "bare.pt")
    assert modprune.load(tmp_path / "bare.pt").out_features == 3


class Unpicklable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fn = lambda x: x  # a lambda cannot be pickled
        self.conv = nn.Conv2d(1, 1, 1)


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(modprune.ModpruneError, match="cannot be saved"):
        modprune.save(Unpicklable(), tmp_path / "m.pt")
    assert files(tmp_path) == []


def test_failed_save_keeps_the_previous_file(cnn: nn.Module, tmp_path: Path) -> None:
    modprune.save(cnn, tmp_path / "m.pt")
    before = (tmp_path / "m.pt").read_bytes()
    with pytest.raises(modprune.ModpruneError):
        modprune.save(Unpicklable(), tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == before and files(tmp_path) == ["m.pt"]


def test_interrupted_save_leaves_nothing(cnn: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"partial")  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        modprune.save(cnn, tmp_path / "m.pt")
    assert files(tmp_path) == []


def test_save_refuses_bad_destinations(cnn: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="directory"):
        modprune.save(cnn, tmp_path)
    with pytest.raises(OutputPathError, match="does not exist"):
        modprune.save(cnn, tmp_path / "missing" / "m.pt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError):
        modprune.save(cnn, tmp_path / "file" / "m.pt")
    modprune.save(cnn, tmp_path / "m.pt")
    with pytest.raises(OutputPathError, match="exists"):
        modprune.save(cnn, tmp_path / "m.pt", overwrite=False)
    with pytest.raises(modprune.ModpruneError, match="nn.Module"):
        modprune.save({"not": "a model"}, tmp_path / "x.pt")  # type: ignore[arg-type]
    assert files(tmp_path) == ["file", "m.pt"]


def test_effective_parameters_of_a_loaded_model_match(cnn: nn.Module, tmp_path: Path) -> None:
    modprune.prune(cnn, PruneConfig(target=0.3, pruner_options={"permanent": False}, steps=2))
    modprune.save(cnn, tmp_path / "m.pt")
    loaded = dict(effective_parameters(modprune.load(tmp_path / "m.pt")))
    for name, tensor in effective_parameters(cnn):
        assert torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("name", ["model.yaml", "model", "model.weights.bin"])
def test_any_file_name_round_trips(name: str, cnn: nn.Module, image: torch.Tensor, tmp_path: Path) -> None:
    modprune.save(cnn, tmp_path / name)
    assert_same_model(cnn, modprune.load(tmp_path / name), image)
