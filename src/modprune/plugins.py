"""The plugin manager: built-in strategies and third-party plugins, registered the same way.

``get_plugin_manager()`` builds a fresh manager each call (no import-time global state);
``default_plugin_manager()`` caches one for the convenience API.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pluggy

from modprune import hookspecs
from modprune.exceptions import DuplicateStrategyError, ModpruneError
from modprune.registry import Registry

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "ModpruneManager",
    "PluginInfo",
    "Strategies",
    "default_plugin_manager",
    "get_plugin_manager",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "modprune"

#: Built-in plugins: (module path, required importable package or None).
BUILTIN_PLUGINS: tuple[tuple[str, str | None], ...] = (
    ("modprune.detectors.builtin", None),
    ("modprune.importance.builtin", None),
    ("modprune.pruners.builtin", None),
    ("modprune.recipes.builtin", None),
    ("modprune.integrations.ultralytics.plugin", "ultralytics"),
)


@dataclass
class PluginInfo:
    """What one plugin is and what it registered."""

    name: str
    version: str
    builtin: bool
    registered: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Strategies:
    """The registries filled from every plugin's ``modprune_register_*`` hooks."""

    detectors: Registry[Any]
    importances: Registry[Any]
    pruners: Registry[Any]
    recipes: Registry[Any]
    layer_pruners: dict[type, Any]
    safe_globals: list[type]


_FAMILIES: tuple[tuple[str, str], ...] = (
    ("detectors", "modprune_register_detectors"),
    ("importances", "modprune_register_importances"),
    ("pruners", "modprune_register_pruners"),
    ("recipes", "modprune_register_recipes"),
)


class ModpruneManager(pluggy.PluginManager):
    """A pluggy manager that also builds modprune's strategy registries from the plugins."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.plugin_info: dict[str, PluginInfo] = {}
        self.failed_plugins: dict[str, str] = {}
        self.strict = False

    def register_plugin(self, plugin: Any, name: str, *, version: str = "", builtin: bool = False) -> None:
        """Register ``plugin`` and record its version; drops the cached registries."""
        self.register(plugin, name=name)
        self.plugin_info[name] = PluginInfo(name=name, version=version, builtin=builtin)
        self.__dict__.pop("strategies", None)

    @functools.cached_property
    def strategies(self) -> Strategies:
        """Registries built from every registered plugin (cached until a plugin is added)."""
        registries = {family: Registry(family[:-1]) for family, _ in _FAMILIES}
        for family, hook_name in _FAMILIES:
            self._collect(registries[family], hook_name)
        layer_pruners: dict[type, Any] = {}
        for _plugin, pairs in self._results("modprune_register_layer_pruners"):
            for module_type, pruner in pairs:
                layer_pruners[module_type] = pruner
        safe: list[type] = []
        for _plugin, classes in self._results("modprune_register_safe_globals"):
            safe.extend(c for c in classes if c not in safe)
        return Strategies(layer_pruners=layer_pruners, safe_globals=safe, **registries)

    def _results(self, hook_name: str) -> Iterable[tuple[str, list[Any]]]:
        """(plugin name, returned list) for each implementation of a collection hook."""
        for impl in reversed(getattr(self.hook, hook_name).get_hookimpls()):
            yield impl.plugin_name, list(impl.function() or [])

    def _collect(self, registry: Registry[Any], hook_name: str) -> None:
        for plugin_name, items in self._results(hook_name):
            info = self.plugin_info.get(plugin_name)
            for item in items:
                try:
                    registry.register(item.name, item, source=plugin_name)
                except DuplicateStrategyError as exc:
                    if self.strict or (info is not None and info.builtin):
                        raise
                    log.warning("skipping a %s from plugin %s: %s", registry.family, plugin_name, exc)
                    self.failed_plugins.setdefault(plugin_name, str(exc))
                    continue
                if info is not None:
                    info.registered.setdefault(registry.family, []).append(item.name)


def _version_of(module_name: str) -> str:
    top = module_name.split(".")[0]
    try:
        return importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        return ""


def get_plugin_manager(
    *,
    entry_points: bool = True,
    plugins: Sequence[Any] = (),
    required: Iterable[str] = (),
    strict: bool = False,
) -> ModpruneManager:
    """Build a plugin manager with the built-ins, installed entry points and ``plugins``.

    :param entry_points: load third-party plugins from the ``modprune`` entry-point group.
    :param plugins: extra plugin objects or modules to register (e.g. in tests).
    :param required: entry-point names that must load; a failure raises instead of being skipped.
    :param strict: raise on any broken plugin or duplicate name instead of skipping it.
    :raises ModpruneError: a required plugin failed, or anything failed under ``strict``.
    """
    pm = ModpruneManager()
    pm.strict = strict
    for module_name, needs in BUILTIN_PLUGINS:
        if needs is not None and importlib.util.find_spec(needs) is None:
            continue
        module = importlib.import_module(module_name)
        pm.register_plugin(module, module_name, version=_version_of("modprune"), builtin=True)
    if entry_points:
        _load_entry_points(pm, set(required), strict)
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        pm.register_plugin(plugin, name, version=getattr(plugin, "__version__", ""))
    pm.check_pending()
    if strict and pm.failed_plugins:
        raise ModpruneError(f"broken plugins: {pm.failed_plugins}", obj=pm.failed_plugins)
    pm.strategies  # noqa: B018 - build now so duplicate names surface here
    return pm


def _load_entry_points(pm: ModpruneManager, required: set[str], strict: bool) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
            pm.register_plugin(plugin, ep.name, version=ep.dist.version if ep.dist else "")
        except Exception as exc:  # a third-party plugin may fail in any way on import
            message = f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            if strict or ep.name in required:
                raise ModpruneError(message + "; fix or uninstall it", obj=ep.name) from exc
            log.warning("%s; skipping it", message)
            pm.failed_plugins[ep.name] = message
    missing = required - set(pm.plugin_info)
    if missing:
        raise ModpruneError(f"required plugins not installed: {', '.join(sorted(missing))}", obj=missing)


_default: list[ModpruneManager] = []


def default_plugin_manager() -> ModpruneManager:
    """The manager the convenience API uses, built on first use and then reused."""
    if not _default:
        _default.append(get_plugin_manager())
    return _default[0]


def reset_default_plugin_manager() -> None:
    """Forget the cached default manager (e.g. after installing a plugin)."""
    _default.clear()


def resolve(pm: ModpruneManager | None) -> ModpruneManager:
    """``pm`` or the default manager."""
    return pm if pm is not None else default_plugin_manager()


