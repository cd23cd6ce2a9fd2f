"""Ultralytics integration (active only when ultralytics is installed; never imported by the core)."""
