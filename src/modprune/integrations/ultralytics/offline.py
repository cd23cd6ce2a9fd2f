"""Make ultralytics run with zero network attempts.

Ultralytics reaches the network in a few places even when nothing needs downloading:

* at import, a DNS "online" probe (``ultralytics.utils.ONLINE``) unless ``YOLO_OFFLINE`` is set;
* in dataset checks and plots, a download of ``Arial.ttf`` / ``Arial.Unicode.ttf`` into its config dir
  when the font is not there (even offline, even with plots off);
* when a pickled class is missing, a ``pip install`` of a package named after the module, unless
  ``YOLO_AUTOINSTALL`` is false;
* usage events (``settings['sync']``), Platform streaming (an API key) and logger integrations
  (ClearML, Comet, DVC, MLflow, Ray Tune, TensorBoard, W&B) enabled in its settings.

:func:`ensure_offline` closes all of these. ultralytics reads ``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL`` and
``YOLO_CONFIG_DIR`` once, when ``ultralytics.utils`` is first imported, so call it before importing
ultralytics. If ultralytics was already imported it patches the module constants it can (``ONLINE``,
``AUTOINSTALL``, the usage-event switch) and puts the fonts into the config dir ultralytics already uses.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from modprune.exceptions import ConfigError

__all__ = ["ensure_offline", "default_config_dir", "FONT_NAMES"]

LOG = logging.getLogger(__name__)

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_WARNED: list[str] = []  # warn once per process about a config dir fixed by an earlier import
# Settings switched off: usage events and every logger integration ultralytics can load.
_OFF_SETTINGS = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


def default_config_dir() -> Path:
    """Where modprune keeps ultralytics' settings and fonts unless told otherwise.

    ``$MODPRUNE_CACHE_DIR/ultralytics`` if set, else ``$XDG_CACHE_HOME/modprune/ultralytics``, else
    ``~/.cache/modprune/ultralytics``.
    """
    if env := os.environ.get("MODPRUNE_CACHE_DIR"):
        return Path(env).expanduser() / "ultralytics"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "modprune" / "ultralytics"


def ensure_offline(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """Prepare ultralytics to run without any network attempt; idempotent. Returns the font/settings dir.

    Args:
        config_dir: Value for ``YOLO_CONFIG_DIR``. Default: an existing ``YOLO_CONFIG_DIR`` environment
            variable (the user's choice), else :func:`default_config_dir`.

    Returns:
        The directory holding ultralytics' ``settings.json`` and the fonts (``$YOLO_CONFIG_DIR/Ultralytics``,
        or the one ultralytics already uses if it was imported before this call).

    Raises:
        ConfigError: ``config_dir`` cannot be created, or no font is available to copy.
    """
    if config_dir is not None:
        root = Path(config_dir).expanduser()
    elif os.environ.get("YOLO_CONFIG_DIR"):
        root = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser()
    else:
        root = default_config_dir()
    root = root.resolve()
    already_imported = "ultralytics.utils" in sys.modules
    if already_imported and not _WARNED:
        actual = Path(sys.modules["ultralytics.utils"].USER_CONFIG_DIR)
        if actual.resolve() != (root / "Ultralytics").resolve():
            _WARNED.append(str(actual))
            LOG.warning("ultralytics was imported before ensure_offline(); its config dir stays %s. Call "
                        "ensure_offline() before importing ultralytics to use %s.", actual, root)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ["YOLO_CONFIG_DIR"] = str(root)
    if os.environ.pop("ULTRALYTICS_API_KEY", None):
        LOG.warning("ULTRALYTICS_API_KEY removed from this process's environment: offline mode streams nothing "
                    "to Ultralytics Platform")
    user_dir = root / "Ultralytics"  # ultralytics appends this to YOLO_CONFIG_DIR
    _install_fonts(user_dir)
    import ultralytics.utils as uu  # noqa: PLC0415 - reads the environment set above

    _patch_imported_constants()  # no-op on a fresh import; needed when ultralytics came first
    if already_imported:
        actual = Path(uu.USER_CONFIG_DIR)
        if actual.resolve() != user_dir.resolve():
            _install_fonts(actual)
            user_dir = actual
    _settings_off(uu.SETTINGS)
    return user_dir


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


def _install_fonts(user_dir: Path) -> None:
    """Copy the fallback font to every name ultralytics may ask for (no-op when already there)."""
    try:
        user_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create ultralytics config dir {str(user_dir)!r} ({e}); pass a writable "
                          "config_dir or set MODPRUNE_CACHE_DIR", obj=user_dir) from e
    src = None
    for name in FONT_NAMES:
        dst = user_dir / name
        if dst.is_file() and dst.stat().st_size > 0:
            continue
        src = src or _find_font()
        tmp = dst.with_name(f".{name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        LOG.debug("installed font %s -> %s", src, dst)


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


def _settings_off(settings: dict) -> None:
    """Turn off usage sync and logger integrations in ultralytics' settings (written only if changed)."""
    changes = {k: False for k in _OFF_SETTINGS if k in settings and settings[k] is not False}
    if changes:
        settings.update(changes)
        LOG.debug("ultralytics settings switched off: %s", sorted(changes))
