"""Ultralytics integration (active only when ultralytics is installed; never imported by the core).

Importing this package does not import ultralytics. Its public API, for plugins that build or load
ultralytics models: :func:`ensure_offline` (call it before importing ultralytics: no network
attempts, for the process only) and :func:`default_config_dir` (the user's ultralytics config root).
"""

from modprune.integrations.ultralytics.offline import default_config_dir, ensure_offline

__all__ = ["default_config_dir", "ensure_offline"]
