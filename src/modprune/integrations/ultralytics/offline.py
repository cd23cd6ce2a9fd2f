"""Make ultralytics run with zero network attempts, changing nothing on disk.

Ultralytics reaches the network in a few places even when nothing needs downloading:

* at import, a DNS "online" probe (``ultralytics.utils.ONLINE``) unless ``YOLO_OFFLINE`` is set;
* in dataset checks and plots, ``check_font`` downloads ``Arial.ttf`` / ``Arial.Unicode.ttf`` into its
  config dir when the font is not there (even offline, even with plots off);
* when a pickled class is missing, a ``pip install`` of a package named after the module, unless
  ``YOLO_AUTOINSTALL`` is false;
* usage events (``settings['sync']``), Platform streaming (an API key) and logger integrations
  (ClearML, Comet, DVC, MLflow, Ray Tune, TensorBoard, W&B) enabled in its settings.

:func:`ensure_offline` closes all of these **for the current process only**: it sets the environment
variables of this process, switches the settings off in the in-memory settings object (without saving
them: the user's ``settings.json`` is not rewritten), and replaces ``check_font`` in the ultralytics
modules that use it by a local lookup (the user's own font file if present, else a system font
matplotlib knows, else matplotlib's bundled DejaVuSans), so no font is downloaded or copied. It uses
the user's ultralytics config dir (``YOLO_CONFIG_DIR`` or ultralytics' default), so modprune and
``YOLO()`` in one process see the same ``datasets_dir``, ``runs_dir`` and ``weights_dir``.

ultralytics reads ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL`` once, when ``ultralytics.utils`` is first
imported, so call it before importing ultralytics. If ultralytics was already imported it patches the
module constants it can (``ONLINE``, ``AUTOINSTALL``, the usage-event switch).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from modprune.exceptions import ConfigError

__all__ = ["ensure_offline", "default_config_dir", "FONT_NAMES", "local_font"]

LOG = logging.getLogger(__name__)

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
# Settings switched off (in memory): usage events and every logger integration ultralytics can load, and
# the one-time export tip: ultralytics clears it by item assignment, which saves the whole settings object
# (with the switches above) to the user's settings.json.
_OFF_SETTINGS = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "openvino_msg")
# Modules that call check_font (imported by name, so each module's own reference is replaced).
_FONT_USERS = ("ultralytics.utils.checks", "ultralytics.data.utils", "ultralytics.utils.plotting")


def default_config_dir() -> Path | None:
    """The ultralytics config root modprune uses: ``$YOLO_CONFIG_DIR`` if set, else None (ultralytics'
    own default, the user's). modprune keeps no config dir of its own."""
    env = os.environ.get("YOLO_CONFIG_DIR")
    return Path(env).expanduser() if env else None


def ensure_offline(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """Prepare ultralytics to run without any network attempt, for this process; idempotent.

    Args:
        config_dir: Value for ``YOLO_CONFIG_DIR`` (only honoured before ultralytics is imported). Default:
            the user's (the ``YOLO_CONFIG_DIR`` environment variable, else ultralytics' default).

    Returns:
        The directory ultralytics uses for ``settings.json`` (``USER_CONFIG_DIR``). Nothing is written there.
    """
    already_imported = "ultralytics.utils" in sys.modules
    if config_dir is not None:
        root = Path(config_dir).expanduser().resolve()
        if already_imported and Path(sys.modules["ultralytics.utils"].USER_CONFIG_DIR) != root / "Ultralytics":
            LOG.debug("ultralytics was imported before ensure_offline(%s); its config dir stays %s", root,
                      sys.modules["ultralytics.utils"].USER_CONFIG_DIR)
        else:
            os.environ["YOLO_CONFIG_DIR"] = str(root)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    if os.environ.pop("ULTRALYTICS_API_KEY", None):
        LOG.warning("ULTRALYTICS_API_KEY removed from this process's environment: offline mode streams nothing "
                    "to Ultralytics Platform")
    import ultralytics.utils as uu  # noqa: PLC0415 - reads the environment set above

    _patch_imported_constants()  # no-op on a fresh import; needed when ultralytics came first
    _patch_check_font()
    _settings_off(uu.SETTINGS)
    return Path(uu.USER_CONFIG_DIR)


def _find_font() -> Path:
    """A TTF bundled with matplotlib (a dependency of ultralytics): DejaVuSans, which covers Unicode too."""
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - ultralytics depends on matplotlib
        raise ConfigError("matplotlib is not installed, so no font can be provided to ultralytics; "
                          "install it with 'pip install matplotlib'", obj="matplotlib") from e
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not font.is_file():
        raise ConfigError(f"matplotlib's bundled font {str(font)!r} is missing; reinstall matplotlib", obj=font)
    return font


def local_font(font: str | os.PathLike[str] = "Arial.ttf") -> Path:
    """A local font file for ultralytics' ``check_font(font)``; never downloads or copies anything.

    The file in ultralytics' config dir when the user has it, else a font of that name matplotlib
    knows, else matplotlib's DejaVuSans (which covers Unicode too).
    """
    name = Path(font).name
    uu = sys.modules.get("ultralytics.utils")
    if uu is not None and (Path(uu.USER_CONFIG_DIR) / name).is_file():
        return Path(uu.USER_CONFIG_DIR) / name
    if Path(font).is_file():
        return Path(font)
    try:
        from matplotlib import font_manager  # noqa: PLC0415

        for entry in font_manager.fontManager.ttflist:
            if name in entry.fname and os.path.exists(entry.fname):
                return Path(entry.fname)
    except ImportError:  # pragma: no cover - ultralytics depends on matplotlib
        pass
    return _find_font()


def _offline_check_font(font: str = "Arial.ttf") -> Path:
    """Replacement for ultralytics' ``check_font`` (same signature): a local file, no download."""
    return local_font(font)


def _patch_check_font() -> None:
    """Point every imported module that uses ``check_font`` at :func:`_offline_check_font`.

    ``ultralytics.utils.checks`` is imported here, so modules importing ``check_font`` from it later get
    the replacement too.
    """
    import ultralytics.utils.checks  # noqa: PLC0415, F401

    for name in _FONT_USERS:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "check_font", None) is not _offline_check_font:
            mod.check_font = _offline_check_font


def _patch_imported_constants() -> None:
    """Switch off online checks and auto-install in modules that copied the constants at import."""
    for name in ("ultralytics.utils", "ultralytics.utils.checks", "ultralytics.utils.events",
                 "ultralytics.utils.export.tensorflow"):
        mod = sys.modules.get(name)
        if mod is None:
            continue
        if hasattr(mod, "ONLINE"):
            mod.ONLINE = False
        if hasattr(mod, "AUTOINSTALL"):
            mod.AUTOINSTALL = False
    events_mod = sys.modules.get("ultralytics.utils.events")
    if events_mod is not None and hasattr(events_mod, "events"):
        events_mod.events.enabled = False


def _settings_off(settings: dict[str, Any]) -> None:
    """Turn off usage sync and logger integrations in ultralytics' settings object, in memory only.

    ``SettingsManager.update`` saves to ``settings.json``; ``dict.update`` changes this process's copy only.
    """
    changes = {k: False for k in _OFF_SETTINGS if k in settings and settings[k] is not False}
    if changes:
        dict.update(settings, changes)
        LOG.debug("ultralytics settings switched off for this process: %s", sorted(changes))
