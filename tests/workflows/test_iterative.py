"""Iterative pruning with recovery: per-step targets against the current model, kept fine-tuning, resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import modprune
from modprune.workflows.iterative import prune_iteratively, schedule_fraction, step_target

from modprune.measure.counts import count_macs

MACS_30 = modprune.PruneConfig(method="structured", target=0.30, target_kind="macs", importance="l2")
X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def test_step_target_is_relative_to_the_current_model() -> None:
    assert step_target(100.0, 100.0, 0.3, 1, 2) == pytest.approx(0.15)
    # step 1 overshot to 80 left: step 2 must only remove 70/80 -> 0.125
    assert step_target(100.0, 80.0, 0.3, 2, 2) == pytest.approx(1 - 70 / 80)
    assert step_target(100.0, 60.0, 0.3, 2, 3) == 0.0  # already past 0.2


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_iterative_schedule_hits_macs_target(steps: int, make_cnn) -> None:
    model = make_cnn(width=64)
    result = prune_iteratively(model, MACS_30, steps=steps, example_inputs=X)
    assert len(result.steps) == steps
    assert abs(result.achieved - 0.30) <= 0.01
    assert 1 - count_macs(model, X) / count_macs(make_cnn(width=64), X) == pytest.approx(result.achieved)
    wanted = [r.wanted for r in result.steps]
    assert wanted == pytest.approx([0.30 * k / steps for k in range(1, steps + 1)])
    assert result.model is model


def test_cubic_schedule_cuts_most_first() -> None:
    shares = [schedule_fraction(k, 4, "cubic") for k in range(1, 5)]
    assert shares == pytest.approx([1 - 0.75 ** 3, 1 - 0.5 ** 3, 1 - 0.25 ** 3, 1.0])
    cuts = [b - a for a, b in zip([0.0, *shares], shares)]
    assert cuts == sorted(cuts, reverse=True)  # each cut smaller than the one before
    assert [schedule_fraction(k, 4) for k in range(1, 5)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert step_target(100.0, 100.0, 0.4, 1, 4, "cubic") == pytest.approx(0.4 * (1 - 0.75 ** 3))
    with pytest.raises(modprune.ConfigError, match="linear, cubic"):
        schedule_fraction(1, 4, "exponential")


@pytest.mark.parametrize("steps", [2, 3])  # at 4 the last cut (0.05% of the MACs) is below this toy net's step
def test_cubic_schedule_hits_macs_target(steps: int, make_cnn) -> None:
    model = make_cnn(width=64)
    result = prune_iteratively(model, MACS_30, steps=steps, example_inputs=X, schedule="cubic")
    assert abs(result.achieved - 0.30) <= 0.01
    assert [r.wanted for r in result.steps] == pytest.approx(
        [0.30 * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)])
    assert abs(result.steps[0].achieved - result.steps[0].wanted) <= 0.01  # the big first cut is hit too


def test_an_unknown_schedule_writes_nothing(tmp_path, make_cnn) -> None:
    with pytest.raises(modprune.ConfigError, match="schedule"):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=2, example_inputs=X, schedule="step",
                          checkpoint_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_schedule(tmp_path, make_cnn) -> None:
    ckpt = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=3, example_inputs=X, finetune_fn=_Tune(fail_at=2),
                          checkpoint_dir=ckpt, schedule="cubic")
    assert json.loads((ckpt / "state.json").read_text())["schedule"] == "cubic"
    with pytest.raises(modprune.ConfigError, match="schedule"):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=3, example_inputs=X, checkpoint_dir=ckpt, resume=True)
    result = prune_iteratively(make_cnn(width=64), MACS_30, steps=3, example_inputs=X, finetune_fn=_Tune(),
                               checkpoint_dir=ckpt, resume=True, schedule="cubic")
    assert abs(result.achieved - 0.30) <= 0.01


class _Tune:
    """Stub fine-tune: returns a copy with every float parameter shifted; records the pruned-only state."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[int] = []
        self.pruned: dict[int, dict[str, torch.Tensor]] = {}
        self.tuned: dict[int, dict[str, torch.Tensor]] = {}
        self.fail_at = fail_at

    def __call__(self, model: nn.Module, step: int) -> nn.Module:
        if step == self.fail_at:
            raise KeyboardInterrupt
        self.calls.append(step)
        self.pruned[step] = copy.deepcopy(model.state_dict())
        tuned = copy.deepcopy(model)
        with torch.no_grad():
            for p in tuned.parameters():
                p.add_(0.01 * step)
        self.tuned[step] = copy.deepcopy(tuned.state_dict())
        return tuned


def test_finetuning_inside_a_step_is_kept(make_cnn) -> None:
    model = make_cnn(width=64)
    tune = _Tune()
    prune_iteratively(model, MACS_30, steps=2, example_inputs=X, finetune_fn=tune)
    assert tune.calls == [1, 2]
    final = model.state_dict()
    for name, value in tune.tuned[2].items():
        assert torch.equal(final[name], value), name
    assert any(not torch.equal(final[n], v) for n, v in tune.pruned[2].items() if v.is_floating_point())
    # step 2 pruned the fine-tuned weights of step 1, not the pruned-only ones
    w1 = tune.tuned[1]["0.weight"]
    assert not torch.equal(w1, tune.pruned[1]["0.weight"])


def test_resume_skips_finished_steps(tmp_path, make_cnn) -> None:
    ckpt = tmp_path / "run"
    first = _Tune(fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=3, example_inputs=X, finetune_fn=first,
                          checkpoint_dir=ckpt)
    assert first.calls == [1]
    state = json.loads((ckpt / "state.json").read_text())
    assert [r["step"] for r in state["records"]] == [1]
    with pytest.raises(modprune.OutputPathError):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=3, example_inputs=X, checkpoint_dir=ckpt)
    with pytest.raises(modprune.ConfigError):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=4, example_inputs=X, checkpoint_dir=ckpt, resume=True)
    second = _Tune()
    result = prune_iteratively(make_cnn(width=64), MACS_30, steps=3, example_inputs=X, finetune_fn=second,
                               checkpoint_dir=ckpt, resume=True)
    assert second.calls == [2, 3]
    assert result.resumed_from == 1
    assert [r.step for r in result.steps] == [1, 2, 3]
    assert abs(result.achieved - 0.30) <= 0.01
    # step 2 started from step 1's fine-tuned weights (the checkpoint), not from a fresh model
    step1 = modprune.load(ckpt / "step-1.pt")
    assert torch.equal(step1.state_dict()["0.weight"], first.tuned[1]["0.weight"])
    assert json.loads((ckpt / "state.json").read_text())["checkpoint"] == "step-3.pt"


def _recording_finetune(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Stand in for the built-in (ultralytics) fine-tuning: record each run's name and epochs, return a copy."""
    trainer = pytest.importorskip("modprune.integrations.ultralytics.trainer")
    seen: list[tuple[str, int]] = []

    def finetune(model, data, options, *, teacher=None, masks=None):
        seen.append((options.name, options.epochs))
        return copy.deepcopy(model)

    monkeypatch.setattr(trainer, "finetune", finetune)
    return seen


def test_step_epochs_split_the_fine_tuning_budget(tmp_path, make_cnn, monkeypatch) -> None:
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

    seen = _recording_finetune(monkeypatch)
    options = FinetuneOptions(epochs=2, imgsz=32, project_dir=tmp_path, name="ft")
    result = prune_iteratively(make_cnn(width=64), MACS_30, "data.yaml", options, steps=3, example_inputs=X,
                               step_epochs=[1, 0, 5], checkpoint_dir=tmp_path / "run")
    assert seen == [("ft-step1", 1), ("ft-step3", 5)]  # step 2 only prunes
    assert [r.finetuned for r in result.steps] == [True, False, True]
    assert abs(result.achieved - 0.30) <= 0.01
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step_epochs"] == [1, 0, 5]
    with pytest.raises(modprune.ConfigError, match="epochs per step"):  # a resume must split the same way
        prune_iteratively(make_cnn(width=64), MACS_30, "data.yaml", options, steps=3, example_inputs=X,
                          checkpoint_dir=tmp_path / "run", resume=True)
    prune_iteratively(make_cnn(width=64), MACS_30, "data.yaml", options, steps=2, example_inputs=X)
    assert seen[2:] == [("ft-step1", 2), ("ft-step2", 2)]  # without step_epochs: options.epochs every step


@pytest.mark.parametrize("bad", [[1, 2], [0, 0, 0], [1, -1, 2], [1, True, 2], "1,1,1", 3])
def test_bad_step_epochs_are_refused_before_anything_runs(bad, tmp_path, make_cnn, monkeypatch) -> None:
    from modprune.integrations.ultralytics.trainer import FinetuneOptions

    seen = _recording_finetune(monkeypatch)
    options = FinetuneOptions(epochs=2, imgsz=32, project_dir=tmp_path)
    with pytest.raises(modprune.ConfigError, match="step_epochs"):
        prune_iteratively(make_cnn(width=64), MACS_30, "data.yaml", options, steps=3, example_inputs=X,
                          step_epochs=bad, checkpoint_dir=tmp_path / "run")
    assert seen == [] and not (tmp_path / "run").exists()


def test_step_epochs_need_the_built_in_fine_tuning(make_cnn) -> None:
    with pytest.raises(modprune.ConfigError, match="built-in"):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=2, example_inputs=X, finetune_fn=_Tune(),
                          step_epochs=[1, 1])
    with pytest.raises(modprune.ConfigError, match="built-in"):
        prune_iteratively(make_cnn(width=64), MACS_30, steps=2, example_inputs=X, step_epochs=[1, 1])


def test_finetune_epochs_option_takes_one_count_or_one_per_step() -> None:
    import argparse

    from modprune.cli.commands.prune import epochs_per_step

    assert epochs_per_step("3") == 3 and epochs_per_step("1,0, 5") == (1, 0, 5)
    for bad in ("0", "0,0", "a,b", "-1,2", "1,,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            epochs_per_step(bad)
