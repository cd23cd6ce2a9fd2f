"""End-to-end workflows built on the public API and the ultralytics integration (application layer:
the core library never imports this package)."""

from modprune.workflows.demo import DemoSettings, DemoSpec
from modprune.workflows.iterative import IterativeResult, StepRecord, prune_iteratively

__all__ = ["DemoSettings", "DemoSpec", "IterativeResult", "StepRecord", "prune_iteratively"]
