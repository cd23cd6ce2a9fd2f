"""Example invocations shown at the end of every built-in command's ``--help``."""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLES", "add_examples"]

#: Command (``"data synth"`` for a nested one) -> example command lines.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "demo": ("modprune demo --quick", "modprune demo --list", "modprune demo --demo tokenc3-lsnet-n --epochs 20"),
    "prune": ("modprune prune best.pt --recipe structured-30 -o pruned.pt",
              "modprune prune best.pt --recipe unstructured-50 --target 0.6 -o sparse.pt --report-json r.json",
              "modprune prune best.pt --recipe structured-30 --dry-run"),
    "inspect": ("modprune inspect best.pt", "modprune inspect yolov8n.yaml"),
    "compare": ("modprune compare best.pt pruned.pt --imgsz 320",
                "modprune compare best.pt pruned.pt --data data.yaml --json cmp.json --report report/"),
    "finetune": ("modprune finetune pruned.pt --data data.yaml --epochs 10 -o tuned.pt",
                 "modprune finetune pruned.pt --data data.yaml --epochs 10 --distill best.pt -o tuned.pt"),
    "data": ("modprune data synth data/ --train 64 --val 16", "modprune data check data/data.yaml"),
    "data synth": ("modprune data synth data/ --train 256 --val 64 --imgsz 160",),
    "data check": ("modprune data check data/data.yaml",),
    "plugins": ("modprune plugins",),
    "recipes": ("modprune recipes", "modprune recipes --show structured-30"),
}


def add_examples(parser: argparse.ArgumentParser, command: str) -> None:
    """Put ``command``'s examples in ``parser``'s epilog (kept verbatim) and in its sub-commands'."""
    lines = EXAMPLES.get(command)
    if lines and not parser.epilog:
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                add_examples(child, f"{command} {name}")
