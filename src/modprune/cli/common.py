"""Helpers shared by subcommands: model loading, output paths, example inputs, tables."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from modprune.exceptions import ConfigError, OutputPathError

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
    """Whether two paths name the same file (symlinks resolved; the files need not exist)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_output(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], *, force: bool) -> Path:
    """Refuse an output equal to an input (unless ``force``), an existing file (unless ``force``),
    a directory, or a location that cannot be written; writes nothing."""
    out = Path(output)
    if not str(output):
        raise OutputPathError("output path is empty", str(output))
    for item in inputs:
        if same_file(out, item) and not force:
            raise OutputPathError(f"output {str(out)!r} is the input file; choose another path (or --force)", str(out))
    if out.is_dir():
        raise OutputPathError(f"output {str(out)!r} is a directory; give a file path", str(out))
    if out.exists() and not force:
        raise OutputPathError(f"output {str(out)!r} exists; pass --force to replace it", str(out))
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"output directory {str(parent)!r} does not exist", str(parent))
    try:  # really try: os.access says yes to root on read-only mounts and ignores ACLs
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise OutputPathError(f"output directory {str(parent)!r} is not writable: {exc.strerror}", str(parent)) from None
    os.close(fd)
    os.unlink(probe)
    return out


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain aligned text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(out)
