"""Options shared by ``modprune sensitivity`` and ``modprune search``: the model, the proxy, the base recipe."""

from __future__ import annotations

import argparse
import os
from typing import Any

from modprune.cli.common import add_model_args, positive_int

__all__ = ["add_proxy_args", "base_config", "input_paths", "set_threads"]


def add_proxy_args(p: argparse.ArgumentParser) -> None:
    """MODEL, --imgsz, --trust-pickle, --data, --subset, --batch, --calibrate-batches, --recipe, --protect-module,
    --threads."""
    add_model_args(p)
    p.add_argument("--data", required=True, help="dataset yaml (YOLO format); its validation split is the held-out set")
    p.add_argument("--subset", type=positive_int, default=32,
                   help="validation images scored per point or trial (the first ones by name; default 32)")
    p.add_argument("--batch", type=positive_int, default=16, help="validation batch size (default 16)")
    p.add_argument("--calibrate-batches", type=int, default=0, metavar="N",
                   help="re-estimate BatchNorm statistics on N batches of the training images before scoring "
                        "each model (default 0: off)")
    p.add_argument("--recipe", help="base recipe (name or YAML): importance, scope, protect, round_to are taken from "
                                    "it (default: structured, l1)")
    p.add_argument("--protect-module", action="append", default=[], metavar="NAME",
                   help="leave this module (qualified name or glob pattern) untouched; repeatable")
    p.add_argument("--threads", type=positive_int,
                   help="PyTorch CPU threads (default: PyTorch's; 1 is often fastest on a busy machine)")


def base_config(args: argparse.Namespace) -> Any:
    """The base :class:`~modprune.config.PruneConfig` from ``--recipe`` and ``--protect-module``."""
    import dataclasses

    from modprune import api
    from modprune.config import PruneConfig

    config = api.load_recipe(args.recipe) if args.recipe else PruneConfig(method="structured", importance="l1")
    if args.protect_module:
        config = dataclasses.replace(config, protect_modules=config.protect_modules + tuple(args.protect_module))
    return config


def input_paths(args: argparse.Namespace) -> list[Any]:
    """The files and folders the command reads (outputs must not be any of them)."""
    from modprune.data import check_dataset

    paths = [args.model, args.data, check_dataset(args.data).root]
    return paths + ([args.recipe] if args.recipe and os.path.exists(args.recipe) else [])


def set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
