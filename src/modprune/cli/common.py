"""Helpers shared by subcommands: model loading, output paths, example inputs, tables."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from modprune.exceptions import OutputPathError

__all__ = ["add_model_args", "check_output", "example_input", "load_model", "render_table"]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ultralytics checkpoint (.pt), modprune file, or ultralytics model yaml")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading checkpoints that need arbitrary pickle code (only for files you trust)",
    )
    parser.add_argument("--imgsz", type=int, default=640, help="square input size for MACs and tracing (default 640)")


def load_model(args: argparse.Namespace) -> nn.Module:
    from modprune.serialization import load

    model = load(args.model, trust_pickle=args.trust_pickle)
    return model.float()


def example_input(imgsz: int, batch: int = 1) -> torch.Tensor:
    if imgsz <= 0:
        raise OutputPathError(f"--imgsz must be positive, got {imgsz}", imgsz)
    return torch.zeros(batch, 3, imgsz, imgsz)


def check_output(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], *, force: bool) -> Path:
    """Refuse an output equal to an input (unless ``force``) or in a missing directory."""
    out = Path(output)
    for item in inputs:
        if Path(item).exists() and out.exists() and out.resolve() == Path(item).resolve() and not force:
            raise OutputPathError(f"output {str(out)!r} is the input file; choose another path (or --force)", str(out))
    if out.is_dir():
        raise OutputPathError(f"output {str(out)!r} is a directory; give a file path", str(out))
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"output directory {str(parent)!r} does not exist", str(parent))
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"output directory {str(parent)!r} is not writable", str(parent))
    return out


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain aligned text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(out)
