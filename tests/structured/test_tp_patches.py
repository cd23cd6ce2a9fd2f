"""modprune leaves torch-pruning as it found it: its changes live in pruners/tp_patches.py, only while it prunes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping

import modprune
from modprune.pruners.tp_patches import GroupCache, frozen_graph, patched_torch_pruning

#: Builds a small model with a concatenation (so index mappings matter), prunes it with torch-pruning
#: alone and prints a digest of the result. Run in a fresh process and in this one.
RAW_PRUNE = textwrap.dedent(
    """
    import hashlib
    import torch, torch_pruning as tp
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.c = nn.Conv2d(16, 12, 1)
            self.d = nn.Conv2d(12, 4, 1)

        def forward(self, x):
            return self.d(torch.relu(self.c(self.bn(torch.cat([self.a(x), self.b(x)], 1)))))

    def raw_prune_digest():
        torch.manual_seed(0)
        model = Net().eval()
        pruner = tp.pruner.BasePruner(
            model, torch.randn(1, 3, 8, 8), importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=0.5, ignored_layers=[model.d],
        )
        pruner.step()
        digest = hashlib.sha256()
        for key, value in model.state_dict().items():
            digest.update(f"{key}{tuple(value.shape)}".encode())
            digest.update(value.detach().contiguous().numpy().tobytes())
        return digest.hexdigest()
    """
)


def _raw_prune_digest() -> str:
    namespace: dict = {}
    exec(compile(RAW_PRUNE, "raw_prune", "exec"), namespace)  # noqa: S102 - the test's own code
    return namespace["raw_prune_digest"]()


def _fresh_process_digest() -> str:
    code = RAW_PRUNE + "\nprint(raw_prune_digest())\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _tp_attributes() -> dict[tuple[str, str], object]:
    """Every attribute of every torch_pruning module, and of its graph and pruner classes."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "torch_pruning" and isinstance(module, types.ModuleType):
            found.update({(name, attr): value for attr, value in vars(module).items()})
    for cls in (tp.DependencyGraph, tp.pruner.BasePruner):
        found.update({(cls.__qualname__, attr): value for attr, value in vars(cls).items()})
    return found


def _small_detector() -> nn.Module:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.left = nn.Conv2d(16, 16, 3, padding=1)
            self.right = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Conv2d(32, 5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.stem(x)
            return self.head(torch.cat([self.left(y), self.right(y)], 1))

    return Net().eval()


def test_structured_prune_leaves_torch_pruning_as_found() -> None:
    before_digest = _raw_prune_digest()
    before = _tp_attributes()
    model = _small_detector()
    seen_inside: list[object] = []
    config = modprune.PruneConfig(method="structured", target=0.3, target_kind="macs", importance="l2", steps=2)
    modprune.prune(
        model,
        config,
        example_inputs=torch.randn(1, 3, 16, 16),
        on_step=lambda *_: seen_inside.append(index_mapping.update_index_mapping),
    )
    assert model.left.out_channels < 16  # it did prune
    original = before[("torch_pruning.dependency.index_mapping", "update_index_mapping")]
    assert seen_inside and all(f is not original for f in seen_inside)  # patched while pruning
    after = _tp_attributes()
    changed = [key for key, value in before.items() if key not in after or after[key] is not value]
    assert changed == []
    assert not any(k[1] == "get_all_groups" for k in after if k not in before)
    assert _raw_prune_digest() == before_digest == _fresh_process_digest()


def test_patch_is_restored_on_exit_on_error_and_when_nested() -> None:
    original = index_mapping.update_index_mapping
    with patched_torch_pruning():
        assert index_mapping.update_index_mapping is not original
        with patched_torch_pruning():
            pass
        assert index_mapping.update_index_mapping is not original  # still the outer one's
    assert index_mapping.update_index_mapping is original
    with pytest.raises(RuntimeError, match="boom"):
        with patched_torch_pruning():
            raise RuntimeError("boom")
    assert index_mapping.update_index_mapping is original


def test_frozen_graph_skips_only_its_own_refreshes_and_caches_groups(monkeypatch) -> None:
    refreshed: list[object] = []
    real = index_mapping.update_index_mapping
    monkeypatch.setattr(index_mapping, "update_index_mapping", lambda g: refreshed.append(g) or real(g))
    model, other = _small_detector(), _small_detector()
    x = torch.randn(1, 3, 8, 8)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    other_graph = tp.DependencyGraph().build_dependency(other, example_inputs=x)
    cache = GroupCache()
    refreshed.clear()
    with frozen_graph(graph, cache):
        with frozen_graph(graph, cache):  # nested: still frozen, nothing restored early
            graph.get_pruning_group(model.left, tp.prune_conv_out_channels, [0])
        first = list(graph.get_all_groups(ignored_layers=[], root_module_types=[nn.Conv2d]))
        again = list(graph.get_all_groups(ignored_layers=[], root_module_types=[nn.Conv2d]))
        other_graph.get_pruning_group(other.left, tp.prune_conv_out_channels, [0])
    assert all(a is b for a, b in zip(first, again)) and cache.groups is not None
    assert graph not in refreshed and other_graph in refreshed
    assert "get_all_groups" not in vars(graph)
    graph.get_pruning_group(model.left, tp.prune_conv_out_channels, [0])
    assert graph in refreshed  # refreshed again once thawed

