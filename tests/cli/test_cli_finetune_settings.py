"""Which optimizer and rate a CLI fine-tuning uses: the recipe's ``finetune`` section, then the flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import modprune
from modprune.cli.commands.finetune import optimizer_options
from modprune.cli.main import main

RECIPE = """name: deep
description: structured, 30% of the MACs, with its fine-tuning
finetune: {optimizer: SGD, lr0: 0.02}
config: {method: structured, target: 0.30, target_kind: macs, importance: l2}
"""


class Captured(Exception):
    """Raised by the stand-in workflow once it has seen the fine-tuning options."""


def test_optimizer_flags_override_the_recipe_and_drop_its_rate() -> None:
    assert optimizer_options(None, None) == {}
    assert optimizer_options(None, 0.05) == {"lr0": 0.05}
    assert optimizer_options("AdamW", None) == {"optimizer": "AdamW", "lr0": None}  # the recipe's SGD rate goes
    assert optimizer_options("AdamW", 0.001) == {"optimizer": "AdamW", "lr0": 0.001}


@pytest.mark.parametrize(("flags", "expected"), [
    ([], ("SGD", 0.02)),
    (["--finetune-lr0", "0.01"], ("SGD", 0.01)),
    (["--finetune-optimizer", "auto"], ("auto", None)),
])
def test_prune_fine_tunes_with_the_recipe_settings(monkeypatch: pytest.MonkeyPatch, make_cnn: Any, tmp_path: Path,
                                                   flags: list[str], expected: tuple[str, float | None]) -> None:
    from modprune.workflows import iterative

    seen: dict[str, Any] = {}

    def capture(model: Any, config: Any, data: Any, options: Any, **kwargs: Any) -> None:
        seen["options"] = options
        raise Captured

    monkeypatch.setattr(iterative, "prune_iteratively", capture)
    modprune.save(make_cnn(width=16), tmp_path / "cnn.pt")
    (tmp_path / "deep.yaml").write_text(RECIPE)
    argv = ["--debug", "prune", str(tmp_path / "cnn.pt"), "--recipe", str(tmp_path / "deep.yaml"), "--imgsz", "32",
            "--data", str(tmp_path / "d.yaml"), "--finetune-epochs", "1", "-o", str(tmp_path / "out.pt"), *flags]
    with pytest.raises(Captured):
        main(argv)
    options = seen["options"]
    assert (options.optimizer, options.lr0) == expected
    assert options.train_args(tmp_path / "d.yaml")["optimizer"] == expected[0]


def test_nominal_batch_comes_from_the_recipe_or_the_flag(monkeypatch: pytest.MonkeyPatch, make_cnn: Any,
                                                         tmp_path: Path) -> None:
    from modprune.workflows import iterative

    seen: list[Any] = []

    def capture(model: Any, config: Any, data: Any, options: Any, **kwargs: Any) -> None:
        seen.append(options)
        raise Captured

    monkeypatch.setattr(iterative, "prune_iteratively", capture)
    modprune.save(make_cnn(width=16), tmp_path / "cnn.pt")
    (tmp_path / "deep.yaml").write_text(RECIPE.replace("lr0: 0.02}", "lr0: 0.02, nominal_batch: 16}"))
    argv = ["--debug", "prune", str(tmp_path / "cnn.pt"), "--recipe", str(tmp_path / "deep.yaml"), "--imgsz", "32",
            "--data", str(tmp_path / "d.yaml"), "--finetune-epochs", "1", "-o", str(tmp_path / "out.pt")]
    for flags in ([], ["--finetune-nominal-batch", "32"]):
        with pytest.raises(Captured):
            main([*argv, *flags])
    assert [o.nominal_batch for o in seen] == [16, 32]
    assert [o.train_args(tmp_path / "d.yaml")["nbs"] for o in seen] == [16, 32]
    plain = seen[0].__class__(epochs=1, imgsz=32, project_dir=tmp_path)
    assert "nbs" not in plain.train_args(tmp_path / "d.yaml")  # ultralytics' own default unless asked


def test_tuning_flags_need_fine_tuning(make_cnn: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    modprune.save(make_cnn(width=16), tmp_path / "cnn.pt")
    rc = main(["prune", str(tmp_path / "cnn.pt"), "--recipe", "structured-30", "--imgsz", "16", "--finetune-lr0",
               "0.01", "-o", str(tmp_path / "out.pt")])
    assert rc == 2 and "--finetune-lr0 need --data and --finetune-epochs" in capsys.readouterr().err
