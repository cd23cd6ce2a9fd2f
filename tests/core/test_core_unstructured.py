"""Unstructured pruning: exact targets, category proportions, caps, protection, masks, schedules."""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import modprune
from modprune import PruneConfig, UnreachableTargetError
from modprune.measure import count_nonzero
from modprune.measure.walk import effective_parameters
from modprune.pruners.allocation import allocate
from modprune.pruners.masks import WeightMask, has_masks


def weights_by_category(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{category: (weights, zeros)}`` over prunable weights (2-D and up), as the forward sees them."""
    cats = modprune.categorize(model).params
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, t in effective_parameters(model):
        if t.ndim >= 2:
            cat = cats.get(name) or cats[name.rpartition(".")[0] + ".parametrizations.weight.original"]
            out[cat][0] += t.numel()
            out[cat][1] += int((t == 0).sum())
    return {c: (n, z) for c, (n, z) in out.items()}


def weight_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{name: (weights, zeros)}`` per prunable weight tensor."""
    return {n: (t.numel(), int((t == 0).sum())) for n, t in effective_parameters(model) if t.ndim >= 2}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not has_masks(model)


@pytest.mark.parametrize("target", [0.0, 0.05, 0.1, 0.33, 0.5, 0.9])
@pytest.mark.parametrize("scope", ["layer", "category", "global"])
@pytest.mark.parametrize("steps", [1, 3])
def test_achieved_equals_target(target: float, scope: str, steps: int, cnn: nn.Module) -> None:
    start = count_nonzero(cnn)
    report = modprune.prune(cnn, PruneConfig(target=target, scope=scope, steps=steps))
    assert abs(report.achieved - target) <= 0.001
    assert report.nonzero_before == start and report.nonzero_after == count_nonzero(cnn)
    assert start - report.nonzero_after == round(target * start)  # exact up to rounding
    data = report.to_dict()
    assert data["target"] == target and data["achieved"] == report.achieved
    assert data["params_before"] == data["params_after"] == sum(p.numel() for p in cnn.parameters())
    assert {r["category"] for r in data["categories"]} >= {"conv", "linear", "norm"}
    assert all(r["weight"] == r["requested_ratio"] == 1.0 for r in data["categories"])  # old key still read
    assert "| weight (relative) |" in report.to_markdown() and "requested ratio" not in report.to_markdown()
    assert not has_masks(cnn)  # permanent by default


def test_achieved_on_a_model_that_already_has_zeros(cnn: nn.Module) -> None:
    modprune.prune(cnn, PruneConfig(target=0.4))
    start = count_nonzero(cnn)
    report = modprune.prune(cnn, PruneConfig(target=0.25, scope="global"))
    assert report.nonzero_before == start
    assert abs(report.achieved - 0.25) <= 0.001


@pytest.mark.parametrize("scope", ["layer", "category"])
def test_category_ratios_keep_their_proportions(scope: str, cnn: nn.Module) -> None:
    ratios = {"conv": 0.8, "linear": 0.4, "depthwise_conv": 0.2}
    modprune.prune(cnn, PruneConfig(target=0.3, category_ratios=ratios, scope=scope))
    table = weights_by_category(cnn)
    fractions = {c: z / n for c, (n, z) in table.items()}
    scale = fractions["conv"] / ratios["conv"]
    for cat, ratio in ratios.items():
        n = table[cat][0]
        assert abs(fractions[cat] - scale * ratio) <= 2 / n, (cat, fractions)


def test_layer_scope_prunes_each_layer_at_its_category_ratio(cnn: nn.Module) -> None:
    modprune.prune(cnn, PruneConfig(target=0.3))
    conv_fractions = [z / n for name, (n, z) in weight_layers(cnn).items() if name in ("0.weight", "4.weight", "6.weight")]
    assert max(conv_fractions) - min(conv_fractions) <= 0.01


def test_a_category_is_capped_at_max_ratio_and_the_rest_redistributed(cnn: nn.Module) -> None:
    # conv holds most weights; with ratio 1.0 against 0.1 it would lose far more than half
    cfg = PruneConfig(target=0.58, category_ratios={"conv": 0.99, "linear": 0.1, "depthwise_conv": 0.1}, max_ratio=0.6)
    report = modprune.prune(cnn, cfg)
    assert abs(report.achieved - 0.58) <= 0.001
    table = weights_by_category(cnn)
    conv_n, conv_z = table["conv"]
    assert conv_z <= math.floor(0.6 * conv_n)
    assert conv_z >= math.floor(0.6 * conv_n) - 3  # it is at the cap...
    lin_n, lin_z = table["linear"]
    assert lin_z / lin_n > 0.1 * (conv_z / conv_n) / 0.99 + 0.05  # ...and the others took more than their share
    for name, (n, z) in weight_layers(cnn).items():
        assert z <= math.floor(0.6 * n), name  # no layer beyond the cap either


@pytest.mark.parametrize("scope", ["layer", "category", "global"])
def test_max_ratio_caps_every_layer_relative_to_the_start_even_over_steps(scope: str, cnn: nn.Module) -> None:
    report = modprune.prune(cnn, PruneConfig(target=0.45, max_ratio=0.5, steps=3, scope=scope))
    assert abs(report.achieved - 0.45) <= 0.001
    for name, (n, z) in weight_layers(cnn).items():
        assert z <= math.floor(0.5 * n), name


@pytest.mark.parametrize("scope", ["layer", "category", "global"])
def test_protected_categories_are_bit_identical(scope: str, cnn: nn.Module) -> None:
    before = snapshot(cnn)
    report = modprune.prune(cnn, PruneConfig(target=0.5, protect=("linear", "depthwise_conv"), scope=scope, steps=2))
    assert abs(report.achieved - 0.5) <= 0.001
    after = cnn.state_dict()
    for key in ("9.weight", "9.bias", "3.weight", "3.bias", "1.weight", "1.bias", "1.running_mean", "0.bias"):
        assert torch.equal(before[key], after[key]), key  # protected, norms and biases untouched
    rows = {r.category: r for r in report.categories}
    assert rows["linear"].protected and rows["linear"].removed_fraction == 0
    assert rows["linear"].weight == 0 == rows["linear"].requested_ratio


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_unreachable_target_raises_and_leaves_the_model_unchanged(steps: int, scope: str, cnn: nn.Module) -> None:
    before = snapshot(cnn)
    cfg = PruneConfig(target=0.5, protect=("conv",), scope=scope, steps=steps, importance="taylor")
    with pytest.raises(UnreachableTargetError, match="unreachable.*conv"):
        modprune.prune(cnn, cfg, example_inputs=torch.randn(1, 3, 8, 8))
    assert_unchanged(cnn, before)
    assert all(p.grad is None for p in cnn.parameters())
    with pytest.raises(UnreachableTargetError, match="max_ratio"):
        modprune.prune(cnn, PruneConfig(target=0.5, max_ratio=0.3, scope=scope, steps=steps))
    assert_unchanged(cnn, before)


def test_unreachable_without_any_prunable_weight() -> None:
    model = nn.Sequential(nn.BatchNorm2d(4))  # 4 nonzero (weight 1, bias 0); norms are never pruned
    with pytest.raises(UnreachableTargetError):
        modprune.prune(model, PruneConfig(target=0.5))
    assert modprune.prune(model, PruneConfig(target=0.0)).achieved == 0


def test_masks_survive_training_and_can_be_baked(cnn: nn.Module, image: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)  # built before
    report = modprune.prune(cnn, PruneConfig(target=0.5, pruner_options={"permanent": False}))
    assert has_masks(cnn) and parametrize.is_parametrized(cnn[0], "weight")
    zeros = {n: t == 0 for n, t in effective_parameters(cnn) if t.ndim >= 2}
    assert sum(int(z.sum()) for z in zeros.values()) == report.nonzero_before - report.nonzero_after
    cnn.train()
    for _ in range(3):
        optimizer.zero_grad()
        cnn(image).pow(2).mean().backward()
        optimizer.step()
    trained = dict(effective_parameters(cnn))
    for name, mask in zeros.items():
        assert (trained[name][mask] == 0).all(), name  # pruned weights stay zero
        assert not torch.equal(trained[name][~mask], torch.zeros_like(trained[name][~mask]))
    modprune.make_permanent(cnn)
    assert not has_masks(cnn) and not parametrize.is_parametrized(cnn[0])
    assert set(cnn.state_dict()) == set(_fresh_keys())
    baked = dict(cnn.named_parameters())
    for name, mask in zeros.items():
        assert (baked[name][mask] == 0).all()
        assert torch.equal(baked[name], trained[name])


def _fresh_keys() -> list[str]:
    return list(copy.deepcopy(nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )).state_dict())


def test_masked_prune_then_prune_again_combines_masks(cnn: nn.Module) -> None:
    start = count_nonzero(cnn)
    modprune.prune(cnn, PruneConfig(target=0.2, pruner_options={"permanent": False}))
    report = modprune.prune(cnn, PruneConfig(target=0.25, pruner_options={"permanent": False}))
    assert abs(report.achieved - 0.25) <= 0.001
    masks = [p for m in cnn.modules() if parametrize.is_parametrized(m) for p in m.parametrizations.weight]
    assert all(isinstance(p, WeightMask) for p in masks) and len(masks) == 5  # one mask per weight
    assert count_nonzero(cnn) == start - round(0.2 * start) - round(0.25 * (start - round(0.2 * start)))


def test_on_step_is_called_each_step_and_fine_tuning_cannot_revive_weights(cnn: nn.Module, image: torch.Tensor) -> None:
    calls: list[tuple[int, int]] = []
    optimizer = torch.optim.SGD(cnn.parameters(), lr=0.05)

    def on_step(step: int, steps: int, model: nn.Module) -> None:
        calls.append((step, steps))
        assert model is cnn
        model.train()
        for _ in range(2):  # fine-tune between steps
            optimizer.zero_grad()
            model(image).pow(2).mean().backward()
            optimizer.step()

    report = modprune.prune(cnn, PruneConfig(target=0.6, steps=4, scope="global"), on_step=on_step)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert abs(report.achieved - 0.6) <= 0.001
    assert not has_masks(cnn)  # baked at the end (permanent by default)


def test_iterative_steps_reach_intermediate_goals(cnn: nn.Module) -> None:
    start = count_nonzero(cnn)
    seen: list[int] = []
    modprune.prune(cnn, PruneConfig(target=0.4, steps=4), on_step=lambda s, n, m: seen.append(count_nonzero(m)))
    removed = [start - nz for nz in seen]
    goals = [round(0.4 * start * k / 4) for k in range(1, 5)]
    assert removed == sorted(removed) and removed[-1] == goals[-1]
    assert all(abs(r - g) <= 8 for r, g in zip(removed, goals))


@pytest.mark.parametrize("with_loss", [False, True])
def test_taylor(with_loss: bool, cnn: nn.Module, image: torch.Tensor) -> None:
    losses: list[Any] = []

    def loss_fn(output: torch.Tensor) -> torch.Tensor:
        losses.append(output)
        return nn.functional.cross_entropy(output, torch.tensor([3]))

    cnn.train()
    running = cnn[1].running_mean.clone()
    report = modprune.prune(
        cnn, PruneConfig(importance="taylor", target=0.3, steps=2), example_inputs=image, loss_fn=loss_fn if with_loss else None
    )
    assert abs(report.achieved - 0.3) <= 0.001
    assert len(losses) == (2 if with_loss else 0)  # one backward per step
    assert cnn.training and torch.equal(cnn[1].running_mean, running)  # eval during scoring, mode restored
    assert all(p.grad is None for p in cnn.parameters())


def test_taylor_differs_from_magnitude_and_depends_on_the_loss(make_cnn: Any, image: torch.Tensor) -> None:
    masks = []
    for loss_fn in (None, lambda out: out[0, 0], lambda out: out[0, 1]):
        model = make_cnn()
        modprune.prune(model, PruneConfig(importance="taylor", target=0.3), example_inputs=image, loss_fn=loss_fn)
        masks.append(torch.cat([(p == 0).flatten() for p in model.parameters()]))
    model = make_cnn()
    modprune.prune(model, PruneConfig(importance="l1", target=0.3))
    masks.append(torch.cat([(p == 0).flatten() for p in model.parameters()]))
    assert len({m.numpy().tobytes() for m in masks}) == 4


def test_frozen_weights_are_fixed_unless_the_whole_model_is_frozen(make_cnn: Any, image: torch.Tensor) -> None:
    model = make_cnn()
    model[4].requires_grad_(False)  # a deliberately fixed layer (like ultralytics' DFL projection)
    fixed = model[4].weight.detach().clone()
    report = modprune.prune(model, PruneConfig(importance="taylor", target=0.2), example_inputs=image)
    assert abs(report.achieved - 0.2) <= 0.001
    assert torch.equal(model[4].weight, fixed) and not model[4].weight.requires_grad
    frozen = make_cnn().requires_grad_(False)  # e.g. an EMA checkpoint: everything frozen
    report = modprune.prune(frozen, PruneConfig(importance="taylor", target=0.2), example_inputs=image)
    assert abs(report.achieved - 0.2) <= 0.001 and int((frozen[6].weight == 0).sum()) > 0
    assert not any(p.requires_grad for p in frozen.parameters())


def test_taylor_needs_example_inputs_and_a_scalar_loss(cnn: nn.Module, image: torch.Tensor) -> None:
    before = snapshot(cnn)
    with pytest.raises(modprune.ConfigError, match="example_inputs"):
        modprune.prune(cnn, PruneConfig(importance="taylor", target=0.2))
    with pytest.raises(modprune.ConfigError, match="scalar"):
        modprune.prune(cnn, PruneConfig(importance="taylor", target=0.2), example_inputs=image, loss_fn=lambda out: out)
    assert_unchanged(cnn, before)


def _zeros(model: nn.Module) -> torch.Tensor:
    return torch.cat([(t == 0).flatten() for _, t in effective_parameters(model)])


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_random_importance_is_deterministic_with_the_seed(scope: str, make_cnn: Any) -> None:
    results = []
    for seed in (3, 3, 4):
        model = make_cnn()
        modprune.prune(model, PruneConfig(importance="random", target=0.4, seed=seed, scope=scope))
        results.append(_zeros(model))
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_magnitude_prunes_the_smallest_weights(cnn: nn.Module) -> None:
    weights = {n: t.detach().abs().clone() for n, t in effective_parameters(cnn) if t.ndim >= 2}
    modprune.prune(cnn, PruneConfig(importance="l1", target=0.3, scope="global"))
    pruned = torch.cat([weights[n][t == 0] for n, t in effective_parameters(cnn) if t.ndim >= 2])
    kept = torch.cat([weights[n][t != 0] for n, t in effective_parameters(cnn) if t.ndim >= 2])
    assert pruned.max() <= kept.min()


def test_report_is_json_friendly(cnn: nn.Module, image: torch.Tensor) -> None:
    import json

    report = modprune.prune(cnn, PruneConfig(target=0.2), example_inputs=image)
    data = json.loads(json.dumps(report.to_dict()))
    for key in ("params_before", "params_after", "nonzero_before", "nonzero_after", "macs_before", "macs_after",
                "target", "achieved", "categories", "config", "nonzero_reduction"):
        assert key in data
    assert data["macs_before"] > 0 and data["nonzero_reduction"] == pytest.approx(report.achieved)
    assert "| conv |" in report.to_markdown() and len(report.digest()) == 16


def test_forward_failure_on_example_inputs_is_a_user_error(cnn: nn.Module) -> None:
    before = snapshot(cnn)
    with pytest.raises(modprune.UnsupportedModelError, match=r"example_inputs \(1, 5, 8, 8\)"):
        modprune.prune(cnn, PruneConfig(target=0.2), example_inputs=torch.randn(1, 5, 8, 8))
    assert_unchanged(cnn, before)


def test_shared_weights_are_counted_and_pruned_once() -> None:
    a = nn.Linear(8, 8)
    model = nn.Sequential(a, nn.ReLU(), a)
    report = modprune.prune(model, PruneConfig(target=0.5))
    assert report.params_before == 72 and report.nonzero_before == 72
    assert abs(report.achieved - 0.5) <= 1 / 72


# --- allocation ------------------------------------------------------------------------------


def test_allocate_is_exact_proportional_and_capped() -> None:
    got = allocate({"a": 1000, "b": 1000, "c": 10}, {"a": 0.8, "b": 0.4, "c": 0.2}, 600)
    assert sum(got.values()) == 600 and abs(got["a"] - 2 * got["b"]) <= 2
    capped = allocate({"a": 1000, "b": 1000}, {"a": 0.99, "b": 0.1}, 1000, cap=0.6)
    assert capped == {"a": 600, "b": 400}
    assert allocate({"a": 10}, {"a": 1.0}, 0) == {"a": 0}
    assert allocate({"a": 10, "b": 10}, {"a": 1.0, "b": 0.0}, 5) == {"a": 5, "b": 0}
    with pytest.raises(UnreachableTargetError):
        allocate({"a": 10, "b": 10}, {"a": 1.0, "b": 0.0}, 11)
    with pytest.raises(UnreachableTargetError):
        allocate({"a": 10}, {"a": 1.0}, 5, limits={"a": 4})
