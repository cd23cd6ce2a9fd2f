"""A tiny third-party modprune plugin (used by modprune's tests): public API and hooks only."""

from __future__ import annotations

import argparse

import torch
from torch import nn

import modprune
from modprune.detectors import BLOCK_PRIORITY
from modprune.importance import WEIGHTS, Importance

__version__ = "0.0.1"


class MagnitudeCubed(Importance):
    """|w|^3 per weight: ranks like L1, but is a distinct, third-party metric."""

    name = "magnitude_cubed"
    scores = frozenset({WEIGHTS})
    description = "|w|^3 (third-party test plugin)"

    def weight_scores(self, param: torch.Tensor, ctx: object) -> torch.Tensor:
        return param.detach().abs().pow(3)


class SqueezeExcite(nn.Module):
    """A squeeze-and-excitation block: channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


@modprune.hookimpl
def modprune_register_importances() -> list[Importance]:
    return [MagnitudeCubed()]


@modprune.hookimpl
def modprune_register_detectors() -> list[modprune.Detector]:
    return [
        modprune.by_type(
            "squeeze_excite",
            "squeeze_excite",
            SqueezeExcite,
            priority=BLOCK_PRIORITY,
            description="squeeze-and-excitation blocks (test plugin)",
        )
    ]


@modprune.hookimpl
def modprune_register_safe_globals() -> list[type]:
    return [SqueezeExcite]


def _se_blocks_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file modprune can load")


def _se_blocks(args: argparse.Namespace) -> int:
    model = modprune.load(args.model)
    blocks = [(name, m.fc2.out_channels) for name, m in model.named_modules() if isinstance(m, SqueezeExcite)]
    for name, channels in blocks:
        print(f"{name}: {channels} channels")
    print(f"{len(blocks)} squeeze-excite blocks")
    return 0


@modprune.hookimpl
def modprune_register_commands() -> list[modprune.cli.Command]:
    from modprune.cli import Command

    return [Command("se-blocks", "list a model's squeeze-excite blocks (test plugin)", run=_se_blocks,
                    add_arguments=_se_blocks_arguments)]
