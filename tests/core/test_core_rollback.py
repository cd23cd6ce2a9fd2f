"""A prune that fails at any stage leaves the caller's model exactly as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modprune
from modprune import PruneConfig, hookimpl
from modprune.exceptions import ModpruneError


class WidthChecked(nn.Module):
    """A block whose forward asserts the width it stored at construction: it fails once pruned."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.width, "stored width no longer matches"
        return torch.relu(self.bn(self.conv(x)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        WidthChecked(16), nn.Conv2d(16, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5),
    )
    model[3].bn.running_mean.uniform_(-1, 1)
    model[0].bias.requires_grad_(False)  # a mixed requires_grad pattern to come back
    model.train()
    model[1].eval()  # and a mixed training pattern
    return model


def _signature(model: nn.Module) -> tuple:
    return (
        [(name, type(m).__name__, m.training) for name, m in model.named_modules()],
        [(name, p.requires_grad, tuple(p.shape)) for name, p in model.named_parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
        {name: {k: v for k, v in vars(m).items() if isinstance(v, (int, float, str, bool, tuple))}
         for name, m in model.named_modules()},
    )


def _assert_same(model: nn.Module, before: tuple, params: list[nn.Parameter], modules: list[nn.Module]) -> None:
    after = _signature(model)
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]
    assert before[2].keys() == after[2].keys()
    for key, value in before[2].items():
        assert torch.equal(value, after[2][key]), key
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]  # same Parameter objects
    assert [id(m) for m in model.modules()] == [id(m) for m in modules]  # same module objects


def _run_failing(model: nn.Module, config: PruneConfig, pm: modprune.ModpruneManager | None = None) -> None:
    before = _signature(model)
    params, modules = list(model.parameters()), list(model.modules())
    with pytest.raises(Exception):
        modprune.prune(model, config, torch.rand(1, 3, 16, 16), pm=pm)
    _assert_same(model, before, params, modules)
    model.eval()
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 5)  # and it still runs


def test_structured_prune_failing_after_apply_restores_model() -> None:
    model = _model()
    with pytest.raises(ModpruneError):  # the failure is the structured pruner's "no longer runs" check
        modprune.prune(_model(), PruneConfig(method="structured", target=0.3), torch.rand(1, 3, 16, 16))
    _run_failing(model, PruneConfig(method="structured", target=0.3))


class FailingFinalize:
    """A plugin whose finalize hook raises after the channels were removed."""

    def __init__(self) -> None:
        self.called = 0

    @hookimpl
    def modprune_finalize_model(self, model: nn.Module) -> None:
        self.called += 1
        raise RuntimeError("finalize failed")


def test_plugin_finalize_raising_restores_model() -> None:
    plugin = FailingFinalize()
    pm = modprune.get_plugin_manager(entry_points=False, plugins=[plugin])
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5),
    )
    _run_failing(model, PruneConfig(method="structured", target=0.3), pm)
    assert plugin.called


def test_unstructured_failing_after_masks_went_in_restores_masks() -> None:
    """A failure after the first step's masks went in (here the step callback) restores the model too."""

    def interrupted(step: int, steps: int, model: nn.Module) -> None:
        assert any("parametrizations" in name for name, _ in model.named_modules())  # the masks are in
        raise RuntimeError("interrupted after step 1")

    model = _model()
    before = _signature(model)
    params, modules = list(model.parameters()), list(model.modules())
    with pytest.raises(RuntimeError, match="interrupted"):
        modprune.prune(model, PruneConfig(method="unstructured", target=0.3, steps=2), torch.rand(1, 3, 16, 16),
                       on_step=interrupted)
    _assert_same(model, before, params, modules)
    assert not any("parametrizations" in name for name, _ in model.named_modules())


def test_kept_masks_are_undone_with_their_class() -> None:
    """Masks kept as parametrizations swap a module's class; a failure afterwards swaps it back."""

    class FailsWhenSparse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((self.conv.weight == 0).any()):
                raise RuntimeError("sparse weights")
            return self.conv(x).mean(dim=(2, 3))

    torch.manual_seed(0)
    model = FailsWhenSparse()
    config = PruneConfig(method="unstructured", target=0.3, pruner_options={"permanent": False})
    with pytest.raises(Exception):
        modprune.prune(model, config, torch.rand(1, 3, 8, 8))
    assert type(model.conv) is nn.Conv2d and not hasattr(model.conv, "parametrizations")
    assert bool((model.conv.weight != 0).all())
