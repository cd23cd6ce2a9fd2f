"""Helpers shared by subcommands: model loading, output paths, example inputs, tables."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from modprune.exceptions import ConfigError
from modprune.outputs import check_output as _check_output
from modprune.outputs import same_path

__all__ = ["add_model_args", "check_output", "example_input", "load_model", "positive_int", "render_table", "same_file"]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ultralytics checkpoint (.pt), modprune file, or ultralytics model yaml")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading checkpoints that need arbitrary pickle code (only for files you trust)",
    )
    parser.add_argument(
        "--imgsz", type=positive_int, default=640, help="square input size for MACs and tracing (default 640)"
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def load_model(args: argparse.Namespace) -> nn.Module:
    from modprune.serialization import load

    model = load(args.model, trust_pickle=args.trust_pickle)
    return model.float()


def example_input(imgsz: int, batch: int = 1) -> torch.Tensor:
    if imgsz <= 0:
        raise ConfigError(f"--imgsz must be positive, got {imgsz}", imgsz)
    return torch.zeros(batch, 3, imgsz, imgsz)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file (symlinks, ``..`` and hard links resolved; need not exist)."""
    return same_path(a, b)


def check_output(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None],
    *,
    force: bool,
    directory: bool = False,
) -> Path:
    """:func:`modprune.outputs.check_output`: refuse an output that is, is inside, or (a directory)
    contains an input; an existing file (unless ``force``); or a location that cannot be written."""
    return _check_output(output, inputs, force=force, directory=directory)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain aligned text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(out)
