"""Design police: every hook is exercised, plugins fail softly, registries fail loudly, imports stay lean."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Sequence

import pluggy
import pytest
import torch
import torch_pruning as tp
from torch import nn

import modprune
from modprune import hookimpl, hookspecs
from modprune.detectors import Detector, by_type
from modprune.exceptions import DuplicateStrategyError, ModpruneError, UnknownStrategyError
from modprune.importance import WEIGHTS, Importance
from modprune.importance.magnitude import L1
from modprune.plugins import ModpruneManager, get_plugin_manager
from modprune.pruners import PruneOutcome, PrunePlan, Pruner
from modprune.recipes import Recipe
from modprune.registry import Registry


def hookspec_names() -> list[str]:
    """Every hook declared in hookspecs.py, found programmatically."""
    return sorted(
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{hookspecs.PROJECT_NAME}_spec")
    )


def test_hookspecs_are_found() -> None:
    names = hookspec_names()
    assert "modprune_register_detectors" in names and "modprune_load_model" in names
    assert len(names) >= 10


# --- one exercise per hook: each registers a plugin and calls the hook through a plugin manager ---


class Gate(nn.Module):
    """A custom module: weights-only loading needs it allowlisted (modprune_register_safe_globals)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).sigmoid()


class TwoBranch(nn.Module):
    """Two parallel convolutions of different widths, concatenated: a plugin wants them equal."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 16, 1), nn.Conv2d(24, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


class NormedGate(nn.Module):
    """conv -> BatchNorm inside one block's forward that torch.fx cannot trace (data-dependent branch):
    only its plugin can tell ``modprune.fuse`` the pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y.relu() if bool(y.abs().sum() >= 0) else y


class Skip(nn.Module):
    """A residual block ``x + conv(x)``: its plugin offers it to depth pruning (modprune_removable_blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


GATE_PRUNER: Any = None  # set below, once GatePruner is defined


class Calls:
    """A plugin implementing every hook, recording which ones were called."""

    def __init__(self) -> None:
        self.called: list[str] = []
        self.prepared: list[nn.Module] = []

    @hookimpl
    def modprune_register_detectors(self) -> list[Detector]:
        self.called.append("modprune_register_detectors")
        return [by_type("gate", "gate", Gate, priority=50)]

    @hookimpl
    def modprune_register_importances(self) -> list[Importance]:
        self.called.append("modprune_register_importances")
        return [_Ones()]

    @hookimpl
    def modprune_register_pruners(self) -> list[Pruner]:
        self.called.append("modprune_register_pruners")
        return [_Noop(self)]

    @hookimpl
    def modprune_register_recipes(self) -> list[Recipe]:
        self.called.append("modprune_register_recipes")
        return [Recipe("calls-recipe", "a recipe from a plugin", modprune.PruneConfig(target=0.25))]

    @hookimpl
    def modprune_register_layer_pruners(self) -> list[tuple[type, Any]]:
        self.called.append("modprune_register_layer_pruners")
        return [(Gate, GATE_PRUNER)]

    @hookimpl
    def modprune_register_safe_globals(self) -> list[type]:
        self.called.append("modprune_register_safe_globals")
        return [Gate]

    @hookimpl
    def modprune_register_model_modules(self) -> list[type]:
        self.called.append("modprune_register_model_modules")
        return [Gate]

    @hookimpl
    def modprune_load_model(self, path: Path, trust_pickle: bool) -> nn.Module | None:
        self.called.append("modprune_load_model")
        if path.suffix == ".toy":
            return nn.Linear(int(path.read_text()), 1)
        return None

    @hookimpl
    def modprune_save_model(self, model: nn.Module, path: Path, metadata: dict[str, Any]) -> bool | None:
        self.called.append("modprune_save_model")
        if isinstance(model, nn.Linear):
            path.write_text(str(model.in_features))
            return True
        return None

    @hookimpl
    def modprune_unwrap_model(self, model: Any) -> nn.Module | None:
        self.called.append("modprune_unwrap_model")
        return model.net if isinstance(model, Wrapper) else None

    @hookimpl
    def modprune_prepare_model(self, model: nn.Module, config: modprune.PruneConfig) -> None:
        self.called.append("modprune_prepare_model")
        self.prepared.append(model)

    @hookimpl
    def modprune_protected_modules(self, model: nn.Module) -> list[nn.Module]:
        self.called.append("modprune_protected_modules")
        return [m for m in model.modules() if isinstance(m, (Gate, TinyAttention))]

    @hookimpl
    def modprune_resizable_outputs(self, model: nn.Module, outputs: Any) -> list[torch.Tensor]:
        self.called.append("modprune_resizable_outputs")
        if isinstance(model, _Returns) and isinstance(outputs, tuple):
            return [outputs[1]]
        return []

    @hookimpl
    def modprune_unwrapped_parameters(self, model: nn.Module) -> list[tuple[Any, int]]:
        self.called.append("modprune_unwrapped_parameters")
        return [(p, 0) for n, p in model.named_parameters() if n.endswith("scale")]

    @hookimpl
    def modprune_attention_heads(self, model: nn.Module) -> list[Any]:
        self.called.append("modprune_attention_heads")
        return [m.layout() for m in model.modules() if isinstance(m, TinyAttention)]

    @hookimpl
    def modprune_finalize_model(self, model: nn.Module) -> None:
        self.called.append("modprune_finalize_model")
        model.finalized = True  # type: ignore[attr-defined]

    @hookimpl
    def modprune_equal_width_layers(self, model: nn.Module) -> list[tuple[nn.Module, ...]]:
        self.called.append("modprune_equal_width_layers")
        return [(m.a, m.b) for m in model.modules() if isinstance(m, TwoBranch)]

    @hookimpl
    def modprune_fusable_pairs(self, model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        self.called.append("modprune_fusable_pairs")
        return [(m.conv, m.bn) for m in model.modules() if isinstance(m, NormedGate)]

    @hookimpl
    def modprune_removable_blocks(self, model: nn.Module) -> list[Any]:
        self.called.append("modprune_removable_blocks")
        return [modprune.RemovableBlock(m, n) for n, m in model.named_modules() if isinstance(m, Skip)]

    @hookimpl
    def modprune_register_commands(self) -> list[Any]:
        from modprune.cli import Command

        self.called.append("modprune_register_commands")
        return [Command("calls-command", "a command from a plugin", run=lambda args: len(args.words),
                        add_arguments=lambda parser: parser.add_argument("words", nargs="*"))]

    @hookimpl
    def modprune_register_demos(self) -> list[Any]:
        from modprune.workflows import DemoSpec

        self.called.append("modprune_register_demos")
        return [DemoSpec("calls-demo", "calls.yaml", unstructured_recipe="calls-recipe", structured_recipe="s")]


class _Ones(Importance):
    name = "calls_ones"
    scores = frozenset({WEIGHTS})

    def weight_scores(self, param: torch.Tensor, ctx: Any) -> torch.Tensor:
        return torch.ones_like(param)


class _Noop(Pruner):
    name = "calls_noop"
    requires = WEIGHTS

    def __init__(self, plugin: Calls) -> None:
        self.plugin = plugin

    def apply(self, model: nn.Module, plan: PrunePlan, ctx: Any) -> PruneOutcome:
        self.plugin.called.append("pruner.apply")
        return PruneOutcome()


class GatePruner(tp.pruner.function.BasePruningFunc):
    """Prunes a Gate through its convolution."""

    TARGET_MODULES = (Gate,)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        tp.prune_conv_out_channels(layer.conv, list(idxs))
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        tp.prune_conv_in_channels(layer.conv, list(idxs))
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.conv.out_channels

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.conv.in_channels


GATE_PRUNER = GatePruner()


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 3, 1), Gate())


class TinyAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, heads sized by stored numbers."""

    def __init__(self, dim: int = 8, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim // heads
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.heads, 3 * self.dim_head, h * w).split(self.dim_head, dim=2)
        scores = (q.transpose(-2, -1) @ k).softmax(-1)
        return x + self.proj((v @ scores.transpose(-2, -1)).reshape(b, -1, h, w))

    def layout(self) -> Any:
        from modprune.pruners.heads import HeadLayout

        def update(heads: int, qk: int, _v: int) -> None:
            self.heads, self.dim_head = heads, qk

        return HeadLayout(module=self, num_heads=self.heads, qk_dim=self.dim_head, v_dim=self.dim_head,
                          qkv=self.qkv, update=update, v_readers=(self.proj,), tied_dims=True)


def _ex_detectors(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    assert modprune.categorize(_model(), pm).params["1.conv.weight"] == "gate"


def _ex_importances(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    report = modprune.prune(_model(), modprune.PruneConfig(target=0.2, importance="calls_ones"), pm=pm)
    assert abs(report.achieved - 0.2) < 0.05


def _ex_pruners(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    modprune.prune(_model(), modprune.PruneConfig(method="calls_noop", target=0.2), pm=pm)
    assert "pruner.apply" in plugin.called


def _ex_recipes(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    assert modprune.load_recipe("calls-recipe", pm=pm).target == 0.25
    assert "calls-recipe" in modprune.list_recipes(pm)


def _ex_layer_pruners(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    # registered as given, wrapped so that its failures inside torch-pruning name the plugin
    assert type(pm.strategies.layer_pruners[Gate]) is GatePruner
    assert pm.strategies.layer_pruners.source(Gate) == pm.get_name(plugin)


def _ex_safe_globals(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    model = _model()
    torch.save({"modprune_format": 1, "metadata": {}, "model": model}, tmp_path / "gate.pt")  # no class manifest
    loaded = modprune.load(tmp_path / "gate.pt", pm=pm)  # no trust_pickle: Gate is allowlisted
    assert torch.equal(loaded[1].conv.weight, model[1].conv.weight)
    with pytest.raises(modprune.UnsafeCheckpointError, match="Gate"):
        modprune.load(tmp_path / "gate.pt", pm=get_plugin_manager(entry_points=False, plugins=[]))


def _ex_model_modules(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    from modprune.model_yaml import validate_model_cfg

    cfg = {"nc": 1, "backbone": [[-1, 1, "Gate", []]], "head": [[-1, 1, "nn.Identity", []]]}
    validate_model_cfg(cfg, "gate.yaml", pm)
    cfg["head"][0][2] = "Other"
    with pytest.raises(modprune.UnsafeCheckpointError, match=r"head\[0\]\[2\]: module 'Other' is not a known block"):
        validate_model_cfg(cfg, "gate.yaml", pm)


def _ex_load_model(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    (tmp_path / "m.toy").write_text("7")
    assert modprune.load(tmp_path / "m.toy", pm=pm).in_features == 7


def _ex_save_model(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    modprune.save(nn.Linear(5, 1), tmp_path / "lin.toy", pm=pm)
    assert (tmp_path / "lin.toy").read_text() == "5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lin.toy"]  # written via a temp file, renamed


class Wrapper:
    """Not a module: a wrapper object holding one (like ultralytics' YOLO)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net


def _ex_unwrap_model(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    modprune.prune(Wrapper(net), modprune.PruneConfig(method="unstructured", target=0.5), pm=pm)
    assert float((net[0].weight == 0).float().mean()) > 0.3  # the wrapped module was pruned in place
    with pytest.raises(modprune.ModpruneError, match="needs a torch.nn.Module"):
        modprune.prune(object(), modprune.PruneConfig(), pm=pm)


def _ex_prepare_model(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    model = _model()
    pm.hook.modprune_prepare_model(model=model, config=modprune.PruneConfig())
    assert plugin.prepared == [model]


def _ex_protected_modules(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    model = _model()
    found = [m for found in pm.hook.modprune_protected_modules(model=model) for m in found]
    assert found == [model[1]]


def _ex_unwrapped_parameters(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    model = _model()
    model.scale = nn.Parameter(torch.ones(3))
    pairs = [p for found in pm.hook.modprune_unwrapped_parameters(model=model) for p in found]
    assert len(pairs) == 1 and pairs[0][0] is model.scale


class _Returns(nn.Module):
    """Returns its prediction and, beside it, the feature map the prediction was made from."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(x)
        return self.head(feat), feat


def _ex_resizable_outputs(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    model = _Returns()
    config = modprune.PruneConfig(method="structured", target=0.4, target_kind="params")
    modprune.prune(model, config, torch.randn(1, 3, 8, 8), pm=pm)
    assert plugin.called.count("modprune_resizable_outputs") >= 1
    assert model.body.out_channels < 16  # the returned map named by the plugin was narrowed
    assert model(torch.randn(1, 3, 8, 8))[0].shape[1] == 2
    fixed = _Returns()
    with pytest.raises(modprune.UnreachableTargetError):  # without the hook both returned tensors keep widths
        modprune.prune(fixed, config, torch.randn(1, 3, 8, 8), pm=get_plugin_manager(entry_points=False))


def _ex_attention_heads(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), TinyAttention(), nn.Conv2d(8, 16, 1), nn.Conv2d(16, 2, 1))
    config = modprune.PruneConfig(method="structured", target=0.2, target_kind="params",
                                  pruner_options={"head_ratio": 0.5}, protect_modules=("1",))
    modprune.prune(model, config, torch.randn(1, 3, 4, 4), pm=pm)  # protected: its heads stay
    assert model[1].heads == 4
    config = modprune.PruneConfig.from_dict({**config.to_dict(), "protect_modules": []})
    modprune.prune(model, config, torch.randn(1, 3, 4, 4), pm=pm)
    assert (model[1].heads, model[1].qkv.out_channels, model[1].proj.in_channels) == (2, 12, 4)
    assert model(torch.randn(1, 3, 4, 4)).shape == (1, 2, 4, 4)


def _ex_finalize_model(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    model = _model()
    pm.hook.modprune_finalize_model(model=model)
    assert model.finalized


def _ex_equal_width_layers(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = modprune.PruneConfig(method="structured", target=0.25, target_kind="channels", importance="l2",
                                  pruner_options={"portable": True})
    model = TwoBranch()
    report = modprune.prune(model, config, example_inputs=torch.rand(1, 3, 8, 8), pm=pm)
    assert model.a.out_channels == model.b.out_channels == model.a.weight.shape[0] < 8
    assert model.c.in_channels == 2 * model.a.out_channels
    assert any(n.startswith("portable: ") for n in report.notes), report.notes
    model(torch.rand(1, 3, 8, 8))


def _ex_fusable_pairs(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = NormedGate()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    model.eval()
    fused = modprune.fuse(model, pm=pm)
    assert isinstance(fused.bn, nn.Identity) and fused.conv.bias is not None  # folded into the conv
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(fused(x), model(x), atol=1e-5)
    assert isinstance(modprune.fuse(model, pm=get_plugin_manager(entry_points=False, plugins=[])).bn, nn.BatchNorm2d)


def _ex_removable_blocks(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    model = nn.Sequential(Skip(), nn.Conv2d(3, 4, 1), Skip().requires_grad_(True))
    model[2].conv = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.rand(1, 3, 8, 8)
    before = model(x).shape
    report = modprune.prune(model, modprune.PruneConfig(method="depth", target=0.5, target_kind="blocks"),
                            example_inputs=x, pm=pm)
    assert sum(isinstance(m, nn.Identity) for m in model) == 1 and report.achieved == 0.5
    assert model(x).shape == before
    with pytest.raises(modprune.UnreachableTargetError, match="modprune_removable_blocks"):
        modprune.prune(nn.Sequential(Skip()), modprune.PruneConfig(method="depth", target=0.5), example_inputs=x,
                       pm=get_plugin_manager(entry_points=False, plugins=[]))


def _ex_commands(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    from modprune.cli.main import build_parser

    args = build_parser(pm).parse_args(["calls-command", "a", "b"])
    assert args.func(args) == 2


def _ex_demos(pm: ModpruneManager, plugin: Calls, tmp_path: Path) -> None:
    from modprune.workflows.demo import select_demo

    demo = select_demo(pm=pm)
    assert (demo.name, demo.model, demo.unstructured_recipe) == ("calls-demo", "calls.yaml", "calls-recipe")


HOOK_EXERCISES: dict[str, Callable[[ModpruneManager, Calls, Path], None]] = {
    "modprune_register_detectors": _ex_detectors,
    "modprune_register_importances": _ex_importances,
    "modprune_register_pruners": _ex_pruners,
    "modprune_register_recipes": _ex_recipes,
    "modprune_register_layer_pruners": _ex_layer_pruners,
    "modprune_register_safe_globals": _ex_safe_globals,
    "modprune_register_model_modules": _ex_model_modules,
    "modprune_load_model": _ex_load_model,
    "modprune_save_model": _ex_save_model,
    "modprune_unwrap_model": _ex_unwrap_model,
    "modprune_prepare_model": _ex_prepare_model,
    "modprune_protected_modules": _ex_protected_modules,
    "modprune_unwrapped_parameters": _ex_unwrapped_parameters,
    "modprune_resizable_outputs": _ex_resizable_outputs,
    "modprune_attention_heads": _ex_attention_heads,
    "modprune_finalize_model": _ex_finalize_model,
    "modprune_equal_width_layers": _ex_equal_width_layers,
    "modprune_fusable_pairs": _ex_fusable_pairs,
    "modprune_removable_blocks": _ex_removable_blocks,
    "modprune_register_commands": _ex_commands,
    "modprune_register_demos": _ex_demos,
}


@pytest.mark.parametrize("hook", hookspec_names())
def test_every_hookspec_is_exercised(hook: str, tmp_path: Path) -> None:
    assert hook in HOOK_EXERCISES, f"hookspec {hook} has no test: add an exercise to HOOK_EXERCISES"
    plugin = Calls()
    pm = get_plugin_manager(entry_points=False, plugins=[plugin])
    HOOK_EXERCISES[hook](pm, plugin, tmp_path)
    assert hook in plugin.called, f"{hook} was not called through the plugin manager"


def test_no_exercise_for_a_removed_hook() -> None:
    assert set(HOOK_EXERCISES) <= set(hookspec_names())


# --- misspelt hooks --------------------------------------------------------------------------


class Misspelt:
    @hookimpl
    def modprune_register_detector(self) -> list[Detector]:  # missing the final "s"
        return []


def test_check_pending_catches_a_misspelt_hookimpl() -> None:
    pm = get_plugin_manager(entry_points=False)
    pm.register(Misspelt(), name="misspelt")
    with pytest.raises(pluggy.PluginValidationError, match="modprune_register_detector"):
        pm.check_pending()


def test_get_plugin_manager_names_the_misspelt_hook() -> None:
    with pytest.raises(ModpruneError, match="did you mean 'modprune_register_detectors'"):
        get_plugin_manager(entry_points=False, plugins=[Misspelt()])


def test_a_hookimpl_with_wrong_arguments_is_refused() -> None:
    class WrongArgs:
        @hookimpl
        def modprune_load_model(self, filename: str) -> None:  # the spec says (path, trust_pickle)
            return None

    with pytest.raises(ModpruneError, match="invalid"):
        get_plugin_manager(entry_points=False, plugins=[WrongArgs()])


# --- import hygiene --------------------------------------------------------------------------


def test_import_modprune_imports_no_heavy_integrations() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import modprune
        modprune.PruneConfig(target=0.2)
        heavy = ("ultralytics", "onnx", "onnxruntime", "torchvision", "torch_pruning")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


# --- registries ------------------------------------------------------------------------------

FAMILIES = ("detectors", "importances", "pruners", "recipes")


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_name_lists_valid_names(family: str) -> None:
    registry: Registry[Any] = getattr(modprune.get_plugin_manager().strategies, family)
    with pytest.raises(UnknownStrategyError) as info:
        registry.get("no-such-strategy")
    message = str(info.value)
    assert "no-such-strategy" in message
    for name in registry.list():
        assert name in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ModpruneError)


def test_unknown_names_through_the_api(cnn: nn.Module) -> None:
    with pytest.raises(UnknownStrategyError, match="l1l2"):
        modprune.prune(cnn, modprune.PruneConfig(importance="nope"))
    with pytest.raises(UnknownStrategyError, match="unstructured"):
        modprune.prune(cnn, modprune.PruneConfig(method="nope"))
    with pytest.raises(UnknownStrategyError, match="unstructured-10"):
        modprune.load_recipe("nope")


def test_registry_refuses_duplicates_and_empty_names() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1, source="p1")
    with pytest.raises(DuplicateStrategyError, match="p1"):
        reg.register("a", 2, source="p2")
    with pytest.raises(DuplicateStrategyError):
        reg.register("", 3)
    assert reg.get("a") == 1 and reg.source("a") == "p1" and list(reg) == ["a"] and len(reg) == 1


class DuplicateL1:
    """A third-party plugin reusing the built-in name ``l1``."""

    @hookimpl
    def modprune_register_importances(self) -> list[Importance]:
        return [L1(), _Ones()]


def test_third_party_duplicate_of_a_builtin_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modprune.plugins"):
        pm = get_plugin_manager(entry_points=False, plugins=[DuplicateL1()])
    assert pm.strategies.importances.source("l1") == "modprune.importance.builtin"
    assert "calls_ones" in pm.strategies.importances  # the plugin's other strategies still count
    assert "DuplicateL1" in pm.failed_plugins
    assert any("l1" in r.getMessage() and "DuplicateL1" in r.getMessage() for r in caplog.records)


def test_third_party_duplicate_raises_under_strict() -> None:
    with pytest.raises(DuplicateStrategyError, match="'l1'"):
        get_plugin_manager(entry_points=False, plugins=[DuplicateL1()], strict=True)


def test_builtin_duplicate_raises() -> None:
    pm = get_plugin_manager(entry_points=False)
    pm.register_plugin(DuplicateL1(), "another.builtin", builtin=True)
    with pytest.raises(DuplicateStrategyError):
        pm.strategies  # noqa: B018


def test_registering_a_plugin_refreshes_the_registries() -> None:
    pm = get_plugin_manager(entry_points=False)
    assert "calls_ones" not in pm.strategies.importances
    pm.register(Calls(), name="late")
    assert "calls_ones" in pm.strategies.importances
    pm.unregister(name="late")
    assert "calls_ones" not in pm.strategies.importances


def test_a_plugin_passed_twice_is_registered_once() -> None:
    plugin = Calls()
    pm = get_plugin_manager(entry_points=False, plugins=[plugin, plugin])
    assert "calls_ones" in pm.strategies.importances


class WrongTypes:
    @hookimpl
    def modprune_register_importances(self) -> list[Any]:
        return [L1, "not an importance"]  # a class instead of an instance, and junk


class RaisingRegistration:
    @hookimpl
    def modprune_register_detectors(self) -> list[Detector]:
        raise RuntimeError("boom in registration")


@pytest.mark.parametrize("plugin_cls", [WrongTypes, RaisingRegistration])
def test_bad_registrations_are_skipped_unless_strict(plugin_cls: type, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modprune.plugins"):
        pm = get_plugin_manager(entry_points=False, plugins=[plugin_cls()])
    assert plugin_cls.__name__ in pm.failed_plugins
    assert "l1" in pm.strategies.importances and "conv" in pm.strategies.detectors
    with pytest.raises(ModpruneError, match=plugin_cls.__name__):
        get_plugin_manager(entry_points=False, plugins=[plugin_cls()], strict=True)


# --- entry points ----------------------------------------------------------------------------


@pytest.fixture()
def fake_entry_points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    """Replace the installed ``modprune`` entry points by ``name=module`` pairs (modules in tmp_path)."""

    def install(**modules: str) -> None:
        eps = []
        for name, source in modules.items():
            module = f"fake_modprune_plugin_{name}"
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            eps.append(importlib.metadata.EntryPoint(name=name, value=module, group="modprune"))
        monkeypatch.syspath_prepend(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("fake_modprune_plugin_")]:
            monkeypatch.delitem(sys.modules, module)

        def entry_points(**kwargs: Any) -> list[importlib.metadata.EntryPoint]:
            return eps if kwargs.get("group") == "modprune" else []

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    return install


BROKEN = "raise RuntimeError('this plugin is broken on import')\n"
GOOD = """
import modprune
from modprune.importance.magnitude import L2

class Squared(L2):
    name = "good_squared"

@modprune.hookimpl
def modprune_register_importances():
    return [Squared()]
"""
MISSPELT = """
import modprune

@modprune.hookimpl
def modprune_register_importance():
    return []
"""


def test_a_plugin_raising_on_import_is_named_and_skipped(
    fake_entry_points: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points(broken=BROKEN, good=GOOD)
    with caplog.at_level(logging.WARNING, logger="modprune.plugins"):
        pm = get_plugin_manager()
    assert "good_squared" in pm.strategies.importances  # the healthy plugin still loads
    assert "broken" in pm.failed_plugins and "this plugin is broken" in pm.failed_plugins["broken"]
    assert any("'broken'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("how", [{"required": ["broken"]}, {"strict": True}])
def test_a_plugin_raising_on_import_is_fatal_when_required_or_strict(
    fake_entry_points: Callable[..., None], how: dict[str, Any]
) -> None:
    fake_entry_points(broken=BROKEN, good=GOOD)
    with pytest.raises(ModpruneError, match="'broken'"):
        get_plugin_manager(**how)


def test_a_required_plugin_that_is_not_installed_raises(fake_entry_points: Callable[..., None]) -> None:
    fake_entry_points(good=GOOD)
    with pytest.raises(ModpruneError, match="not installed: absent"):
        get_plugin_manager(required=["absent"])


def test_an_installed_plugin_with_a_misspelt_hook_is_skipped(fake_entry_points: Callable[..., None]) -> None:
    fake_entry_points(typo=MISSPELT, good=GOOD)
    pm = get_plugin_manager()
    assert "typo" in pm.failed_plugins and "modprune_register_importances" in pm.failed_plugins["typo"]
    assert not pm.is_registered(sys.modules["fake_modprune_plugin_typo"])
    pm.check_pending()  # nothing unknown is left registered
    with pytest.raises(ModpruneError, match="typo"):
        get_plugin_manager(strict=True)


def test_get_plugin_manager_builds_a_fresh_manager_each_call() -> None:
    a, b = get_plugin_manager(entry_points=False), get_plugin_manager(entry_points=False)
    assert a is not b and a.strategies.importances.list() == b.strategies.importances.list()
