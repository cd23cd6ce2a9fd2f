"""Structured pruning options: iterative steps, params / channels targets, scopes, protection, caps."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modprune
from modprune.measure import count_macs

from ._support import example, main_output


def _prune(model: nn.Module, pm, **options) -> modprune.PruneReport:
    config = modprune.PruneConfig(method="structured", **{"target": 0.4, "importance": "l2", **options})
    return modprune.prune(model, config, example(), pm=pm)


def _params(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


def test_iterative_steps_call_back_and_reach_the_target(build, pm) -> None:
    model = build("yolov8n")
    seen: list[tuple[int, int, float]] = []
    x = example()
    macs0 = count_macs(model, x)

    def on_step(step: int, steps: int, m: nn.Module) -> None:
        seen.append((step, steps, 1 - count_macs(m, x) / macs0))

    config = modprune.PruneConfig(method="structured", target=0.45, steps=3, importance="taylor")
    report = modprune.prune(model, config, x, on_step=on_step, pm=pm)
    assert [(s, n) for s, n, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    for (step, _, reached), goal in zip(seen, (0.15, 0.30, 0.45)):
        assert abs(reached - goal) <= 0.01, (step, reached)
    assert abs(report.achieved - 0.45) <= 0.01
    assert sum(n.startswith("step ") for n in report.notes) == 3
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["yolov8n", "resnet18"])
def test_params_target(name: str, build, pm) -> None:
    model = build(name)
    report = _prune(model, pm, target=0.4, target_kind="params")
    assert abs(report.achieved - 0.4) <= 0.01
    assert abs(1 - report.params_after / report.params_before - 0.4) <= 0.01


def test_channels_target_removes_that_share_of_channels(build, pm) -> None:
    model = build("resnet18")
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    report = _prune(model, pm, target=0.25, target_kind="channels")
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    removed = 1 - sum(after.values()) / sum(before.values())
    assert 0.2 <= removed <= 0.3
    assert any(n.startswith("achieved channel reduction") for n in report.notes)


@pytest.mark.parametrize("scope", ["category", "global"])
def test_ranking_scopes(scope: str, build, pm) -> None:
    model = build("mobilenet_v3_small")
    report = _prune(model, pm, target=0.4, scope=scope, importance="l1")
    assert abs(report.achieved - 0.4) <= 0.01
    assert main_output(model, example(96)).shape == (1, 1000)


def test_global_ranking_respects_max_ratio_and_keeps_every_layer(build, pm) -> None:
    model = build("resnet18")
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    _prune(model, pm, target=0.3, scope="global", max_ratio=0.5, importance="bn_scale")
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            assert module.out_channels >= before[name] * 0.5, name


def test_round_to_keeps_multiples(build, pm) -> None:
    model = build("yolov8n")
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    report = _prune(model, pm, target=0.4, pruner_options={"round_to": 8})
    assert abs(report.achieved - 0.4) <= 0.01
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    changed = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n in before
               and m.out_channels != before[n]]
    assert changed and names
    for name in changed:
        assert model.get_submodule(name).out_channels % 8 == 0, name


def test_protected_category_is_bit_identical(build, pm) -> None:
    model = build("yolov8n")
    head = "model.22."
    before = _params(model, head)
    report = _prune(model, pm, target=0.4, protect=("detect_head",))
    assert abs(report.achieved - 0.4) <= 0.01
    after = _params(model, head)
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    assert any("protected category 'detect_head'" in n for n in report.notes)


def test_protected_depthwise_convs_are_untouched(build, pm) -> None:
    model = build("mobilenet_v3_small")
    depthwise = {n: m.weight.detach().clone() for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels}
    report = _prune(model, pm, target=0.2, protect=("depthwise_conv",))
    assert abs(report.achieved - 0.2) <= 0.01
    for name, weight in depthwise.items():
        assert torch.equal(model.get_submodule(name).weight, weight), name


def test_detect_final_convs_and_dfl_are_untouched_by_default(build, pm) -> None:
    model = build("yolo11n")
    head = model.model[-1]
    finals = {f"{attr}.{i}": branch[-1] for attr in ("cv2", "cv3") for i, branch in enumerate(getattr(head, attr))}
    before = {k: (m.weight.detach().clone(), m.bias.detach().clone()) for k, m in finals.items()}
    dfl = head.dfl.conv.weight.detach().clone()
    report = _prune(model, pm, target=0.5)
    assert abs(report.achieved - 0.5) <= 0.01
    for key, module in finals.items():
        assert torch.equal(module.weight, before[key][0]) and torch.equal(module.bias, before[key][1]), key
    assert torch.equal(head.dfl.conv.weight, dfl)
    assert [b[-1].out_channels for b in head.cv2] == [64] * 3 and [b[-1].out_channels for b in head.cv3] == [80] * 3
    assert any(n.startswith("attention protected") and "(Attention)" in n for n in report.notes)


def test_attention_modules_are_protected(build, pm) -> None:
    model = build("yolo12n")
    attention = {n: p.detach().clone() for n, p in model.named_parameters() if ".attn." in n}
    assert attention
    _prune(model, pm, target=0.4, pruner_options={"attention": "protect"})
    now = dict(model.named_parameters())
    for name, tensor in attention.items():
        assert torch.equal(now[name], tensor), name


def test_unreachable_target_raises_before_changing_the_model(build, pm) -> None:
    model = build("resnet18")
    reference = copy.deepcopy(model)
    with pytest.raises(modprune.UnreachableTargetError, match="unreachable"):
        _prune(model, pm, target=0.9, max_ratio=0.3)
    assert str(model) == str(reference)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_everything_protected_is_refused_by_check(build, pm) -> None:
    model = build("resnet18")
    with pytest.raises(modprune.UnreachableTargetError, match="nothing to prune"):
        _prune(model, pm, protect=("conv", "linear"))


def test_structured_needs_example_inputs(build, pm) -> None:
    config = modprune.PruneConfig(method="structured", target=0.3)
    with pytest.raises(modprune.ConfigError, match="example_inputs"):
        modprune.prune(build("resnet18"), config, None, pm=pm)


def test_same_seed_same_result_with_random_importance(build, pm) -> None:
    shapes = []
    for _ in range(2):
        model = build("resnet18")
        _prune(model, pm, importance="random", scope="global", seed=3)
        shapes.append([p.shape for p in model.parameters()])
    assert shapes[0] == shapes[1]


def test_restores_train_mode_and_requires_grad(build, pm) -> None:
    model = build("resnet18").train()
    model.fc.requires_grad_(False)
    _prune(model, pm, target=0.3)
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
