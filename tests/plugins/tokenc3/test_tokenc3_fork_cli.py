"""A checkpoint saved by the user's fork works wherever modprune takes a MODEL: API and command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from ultralytics.nn.modules import block as ul_block

import modprune
from modprune_tokenc3_lsnet import is_fork_checkpoint
from modprune_tokenc3_lsnet.blocks import TokenC3

from .test_tokenc3_compat import _fork_like, pickled_as_fork

TRAIN_ARGS = {"imgsz": 640, "epochs": 300, "data": "drone.yaml"}


@pytest.fixture(scope="module")
def fork_best(model_n, tmp_path_factory):
    model = _fork_like(model_n)
    path = tmp_path_factory.mktemp("forkcli") / "best.pt"
    ckpt = {"epoch": 10, "model": None, "ema": model.half(), "train_args": dict(TRAIN_ARGS), "version": "8.3.63"}
    with pickled_as_fork():
        torch.save(ckpt, path)
    return path, model.float()


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "modprune.cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_fork_checkpoint_is_recognised_without_unpickling(fork_best, tmp_path):
    path, _ = fork_best
    assert is_fork_checkpoint(path)
    plain = tmp_path / "plain.pt"
    torch.save({"model": torch.nn.Conv2d(1, 1, 1)}, plain)
    assert not is_fork_checkpoint(plain) and not is_fork_checkpoint(tmp_path / "missing.pt")


def test_load_keeps_weights_and_train_args_and_save_keeps_them(fork_best, tmp_path):
    path, original = fork_best
    model = modprune.load(path)  # no trust_pickle: known fork classes need no opt-in
    assert not hasattr(ul_block, "TokenC3")  # the aliases are gone again
    assert any(isinstance(m, TokenC3) for m in model.modules())
    assert model.args == TRAIN_ARGS
    loaded = model.state_dict()
    for key, value in original.state_dict().items():
        torch.testing.assert_close(loaded[key], value.to(loaded[key].dtype), msg=key)
    out = modprune.save(model, tmp_path / "again.pt")
    again = modprune.load(out)
    assert dict(again.args) == TRAIN_ARGS
    # trust_pickle goes through the aliases too (plain full pickle cannot resolve the fork's paths)
    assert modprune.load(path, trust_pickle=True).args == TRAIN_ARGS


@pytest.mark.slow
def test_cli_inspect_and_prune_take_a_fork_checkpoint(fork_best, tmp_path):
    path, _ = fork_best
    res = _cli("inspect", path, "--imgsz", "64", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "tokenc3" in res.stdout
    res = _cli("prune", path, "--recipe", "unstructured-10", "--imgsz", "64", "-o", "p.pt",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert modprune.load(tmp_path / "p.pt").args == TRAIN_ARGS
