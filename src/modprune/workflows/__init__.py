"""End-to-end workflows built on the public API and the ultralytics integration (application layer:
the core library never imports this package)."""

from modprune.workflows.demo import DemoSettings, DemoSpec

__all__ = ["DemoSettings", "DemoSpec"]
