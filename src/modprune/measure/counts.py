"""Parameter, nonzero and MAC counts.

MACs come from PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode` (maintained with
PyTorch, counts matmul/conv work at the ATen level, so functional and dynamic convolutions count too).
It reports FLOPs as 2 x multiply-accumulates; we report MACs = FLOPs / 2. Elementwise work
(activations, adds, norms) is not counted, as in most published MAC figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modprune.measure.walk import call_model, effective_parameters

__all__ = ["count_params", "count_nonzero", "count_macs", "file_size", "MAC_COUNTER"]

MAC_COUNTER = f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__}), MACs = FLOPs / 2"


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once; masked weights count at full size)."""
    return sum(t.numel() for _, t in effective_parameters(model))


@torch.no_grad()
def count_nonzero(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero, as the forward sees them (masks applied)."""
    return sum(int(torch.count_nonzero(t)) for _, t in effective_parameters(model))


@torch.no_grad()
def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (eval mode, no grad).

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            call_model(model, example_inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def file_size(path: str | os.PathLike[str]) -> int:
    """Size of a file in bytes."""
    return Path(path).stat().st_size
