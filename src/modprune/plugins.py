"""The plugin manager: built-in strategies and third-party plugins, registered the same way.

``get_plugin_manager()`` builds a fresh manager each call (no import-time global state);
``default_plugin_manager()`` caches one for the convenience API.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import pluggy

from modprune import hookspecs
from modprune.exceptions import DuplicateStrategyError, ModpruneError, PluginError
from modprune.optional import EXTRAS, available
from modprune.registry import LayerPrunerRegistry, Registry

if TYPE_CHECKING:  # pragma: no cover
    from modprune.detectors.base import Detector
    from modprune.importance.base import Importance
    from modprune.pruners.base import Pruner
    from modprune.recipes import Recipe

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "ModpruneManager",
    "PluginInfo",
    "Strategies",
    "call_hook",
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
    ("modprune.integrations.timm.plugin", "timm"),
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

    detectors: Registry[Detector]
    importances: Registry[Importance]
    pruners: Registry[Pruner]
    recipes: Registry[Recipe]
    #: Layer pruners by module class; ``layer_pruners.source(cls)`` names the registering plugin.
    layer_pruners: LayerPrunerRegistry


_FAMILIES: tuple[tuple[str, str], ...] = (
    ("detectors", "modprune_register_detectors"),
    ("importances", "modprune_register_importances"),
    ("pruners", "modprune_register_pruners"),
    ("recipes", "modprune_register_recipes"),
)


def _family_types() -> dict[str, type]:
    """The class every item of each family must be an instance of (imported lazily)."""
    from modprune.detectors.base import Detector
    from modprune.importance.base import Importance
    from modprune.pruners.base import Pruner
    from modprune.recipes import Recipe

    return {"detectors": Detector, "importances": Importance, "pruners": Pruner, "recipes": Recipe}


class ModpruneManager(pluggy.PluginManager):
    """A pluggy manager that also builds modprune's strategy registries from the plugins.

    Registries are filled in plugin registration order (built-ins first), so when a third-party
    plugin reuses a built-in name it is the third-party entry that is skipped (with a warning; an
    error under ``strict``). A third-party plugin whose registration hook raises or returns
    something of the wrong type is skipped the same way and listed in ``failed_plugins``.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.plugin_info: dict[str, PluginInfo] = {}
        self.failed_plugins: dict[str, str] = {}
        #: Built-in integrations not registered, and why (e.g. their framework is not installed).
        self.skipped_integrations: dict[str, str] = {}
        self.strict = False
        #: Plugin names whose failures raise instead of being skipped.
        self.required: set[str] = set()

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """pluggy's ``register``; also drops the cached registries."""
        self.__dict__.pop("strategies", None)
        self.__dict__.pop("safe_globals", None)
        return super().register(plugin, name)

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        """pluggy's ``unregister``; also drops the cached registries."""
        self.__dict__.pop("strategies", None)
        self.__dict__.pop("safe_globals", None)
        return super().unregister(plugin, name)

    def register_plugin(self, plugin: Any, name: str, *, version: str = "", builtin: bool = False) -> None:
        """Register ``plugin`` and record its version.

        :raises ModpruneError: the plugin has a hook implementation modprune does not define (a
            misspelt hook name) or one whose arguments do not match the hook; it is not registered.
        """
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise ModpruneError(f"plugin {name!r} is invalid: {exc}", obj=name) from exc
        unknown = self.unknown_hooks(plugin)
        if unknown:
            self.unregister(plugin)
            valid = [n for n in dir(hookspecs) if n.startswith("modprune_")]
            hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, valid, 1)) else repr(u)
                     for u in unknown]
            raise ModpruneError(f"plugin {name!r} implements unknown hooks: {', '.join(hints)}", obj=name)
        self.plugin_info[name] = PluginInfo(name=name, version=version, builtin=builtin)

    def unknown_hooks(self, plugin: Any) -> list[str]:
        """Names of ``plugin``'s hook implementations that match no hookspec (typos)."""
        names = []
        for caller in self.get_hookcallers(plugin) or []:
            if not caller.has_spec() and any(i.plugin is plugin and not i.optionalhook for i in caller.get_hookimpls()):
                names.append(caller.name)
        return sorted(names)

    @functools.cached_property
    def strategies(self) -> Strategies:
        """Registries built from every registered plugin (cached until a plugin is added)."""
        registries = {family: Registry(family[:-1]) for family, _ in _FAMILIES}
        types = _family_types()
        for family, hook_name in _FAMILIES:
            self._collect(registries[family], hook_name, types[family])
        return Strategies(layer_pruners=self._layer_pruners(), **registries)

    def _layer_pruners(self) -> LayerPrunerRegistry:
        """The ``modprune_register_layer_pruners`` pairs; a wrong entry is skipped naming its plugin.
        Each pruner is wrapped so that an exception inside torch-pruning names its plugin."""
        registry = LayerPrunerRegistry()
        for plugin_name, pairs in self._results("modprune_register_layer_pruners"):
            info = self.plugin_info.get(plugin_name)
            for pair in pairs:
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                    self._fail(plugin_name, ModpruneError(
                        f"plugin {plugin_name!r}: modprune_register_layer_pruners returned {pair!r}, "
                        "not a (module_type, pruner) pair", obj=plugin_name))
                    continue
                try:
                    registry.register(pair[0], _guarded_layer_pruner(self, plugin_name, pair[1]), source=plugin_name)
                except ModpruneError as exc:
                    self._fail(plugin_name, exc)
                    continue
                if info is not None:
                    info.registered.setdefault(registry.family, []).append(pair[0].__name__)
        return registry

    @functools.cached_property
    def safe_globals(self) -> list[type]:
        """Classes plugins allow weights-only loading to rebuild (``modprune_register_safe_globals``).

        Collected on first use, when a file is loaded, not when the manager is built: listing a
        framework's classes imports the framework.
        """
        safe: list[type] = []
        for plugin_name, classes in self._results("modprune_register_safe_globals"):
            for c in classes:
                if not callable(c):
                    self._fail(plugin_name, ModpruneError(
                        f"plugin {plugin_name!r}: modprune_register_safe_globals returned {c!r}, not a class",
                        obj=plugin_name))
                elif c not in safe:
                    safe.append(c)
        return safe

    def collect(self, hook_name: str, expected: type) -> list[tuple[str, Any]]:
        """``(plugin name, item)`` for every item returned by the collection hook ``hook_name``, in
        plugin order, for hooks collected on demand (e.g. CLI commands, demos) rather than into the
        strategy registries. Implementations that raise, and items that are not ``expected``
        instances, are skipped with a warning naming the plugin (an error under ``strict``)."""
        found: list[tuple[str, Any]] = []
        for plugin_name, items in self._results(hook_name):
            for item in items:
                if isinstance(item, expected):
                    found.append((plugin_name, item))
                else:
                    self._fail(plugin_name, ModpruneError(
                        f"plugin {plugin_name!r}: {hook_name} returned {item!r}, not a {expected.__name__}",
                        obj=plugin_name))
        return found

    def _fail(self, plugin_name: str, error: ModpruneError) -> None:
        """Raise ``error`` for built-in plugins or under ``strict``; else warn and skip the item."""
        info = self.plugin_info.get(plugin_name)
        if self.strict or plugin_name in self.required or (info is not None and info.builtin):
            raise error
        log.warning("skipping part of plugin %s: %s", plugin_name, error)
        self.failed_plugins.setdefault(plugin_name, str(error))

    def _results(self, hook_name: str) -> Iterable[tuple[str, list[Any]]]:
        """(plugin name, returned list) for each implementation of a collection hook, in plugin
        registration order (built-ins first). A raising implementation is reported by :meth:`_fail`."""
        order = {name: i for i, (name, _) in enumerate(self.list_name_plugin())}
        impls = getattr(self.hook, hook_name).get_hookimpls()
        for impl in sorted(impls, key=lambda i: order.get(i.plugin_name, len(order))):
            try:
                result = impl.function()
                items = list(result or [])
            except (Exception, SystemExit) as exc:  # a third-party plugin may fail in any way, even sys.exit()
                error = ModpruneError(
                    f"plugin {impl.plugin_name!r}: {hook_name} raised {type(exc).__name__}: {exc}", obj=impl.plugin_name
                )
                error.__cause__ = exc
                self._fail(impl.plugin_name, error)
                continue
            yield impl.plugin_name, items

    def _collect(self, registry: Registry[Any], hook_name: str, expected: type) -> None:
        for plugin_name, items in self._results(hook_name):
            info = self.plugin_info.get(plugin_name)
            for item in items:
                if not isinstance(item, expected):
                    self._fail(plugin_name, ModpruneError(
                        f"plugin {plugin_name!r}: {hook_name} returned {item!r}, not a {expected.__name__}",
                        obj=plugin_name))
                    continue
                try:
                    registry.register(item.name, item, source=plugin_name)
                except DuplicateStrategyError as exc:
                    self._fail(plugin_name, exc)
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
    pm.required = set(required)
    for module_name, needs in BUILTIN_PLUGINS:
        if needs is not None and not available(needs):
            pm.skipped_integrations[module_name] = (
                f"{needs} is not installed (pip install 'modprune[{EXTRAS.get(needs, needs)}]')")
            continue
        module = importlib.import_module(module_name)
        pm.register_plugin(module, module_name, version=_version_of("modprune"), builtin=True)
    if entry_points:
        _load_entry_points(pm, set(required), strict)
    for plugin in plugins:
        if pm.is_registered(plugin):  # e.g. also installed through its entry point
            continue
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if pm.has_plugin(name):
            name = f"{name}@{id(plugin):x}"
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
        except (Exception, SystemExit) as exc:  # a plugin may fail in any way on import, even sys.exit()
            message = f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            if strict or ep.name in required:
                raise ModpruneError(message + "; fix or uninstall it", obj=ep.name) from exc
            log.warning("%s; skipping it", message)
            pm.failed_plugins[ep.name] = message
    missing = required - set(pm.plugin_info)
    if missing:
        raise ModpruneError(f"required plugins not installed: {', '.join(sorted(missing))}", obj=missing)


def call_hook(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> Any:
    """Call hook ``name`` like pluggy does, but name the plugin whose implementation raises.

    Implementations run in pluggy's order (last registered first, ``tryfirst``/``trylast``
    respected); a ``firstresult`` hook stops at the first non-None result and returns it, any
    other hook returns the list of non-None results.

    :raises PluginError: an implementation raised anything but a :class:`ModpruneError` (which
        passes through as it is); the failure is also recorded in ``pm.failed_plugins``.
    """
    caller = getattr(pm.hook, name)
    impls = caller.get_hookimpls()
    firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
    if any(i.hookwrapper or i.wrapper for i in impls):  # pluggy must drive wrappers itself
        return caller(**kwargs)
    results = []
    for impl in reversed(impls):
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
        except ModpruneError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin's hook may fail in any way
            raise plugin_failure(pm, impl.plugin_name, name, exc) from exc
        if result is not None:
            if firstresult:
                return result
            results.append(result)
    return None if firstresult else results


def plugin_failure(pm: Any, plugin_name: str, where: str, exc: BaseException) -> ModpruneError:
    """The error for plugin ``plugin_name`` raising ``exc`` in ``where``, recorded in ``pm.failed_plugins``.

    A full or read-only disk is reported as such (:class:`~modprune.exceptions.DiskError`), not as a
    plugin bug.
    """
    from modprune.outputs import disk_error  # noqa: PLC0415 - outputs imports nothing of ours at import time

    if (disk := disk_error(exc)) is not None:
        return disk
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    message = f"plugin {plugin_name!r} failed in {where}: {type(exc).__name__}: {text}; fix, update or uninstall it"
    failed = getattr(pm, "failed_plugins", None)
    info = getattr(pm, "plugin_info", {}).get(plugin_name)
    if isinstance(failed, dict) and not (info is not None and info.builtin):
        failed.setdefault(plugin_name, f"failed in {where}: {type(exc).__name__}: {text}")
    return PluginError(message, plugin_name, plugin=plugin_name, hook=where)


def _guarded_layer_pruner(pm: Any, plugin_name: str, pruner: Any) -> Any:
    """A shallow copy of ``pruner`` whose public methods name ``plugin_name`` when they raise.

    torch-pruning calls these methods deep inside its own code; without this a plugin bug would
    surface as a torch-pruning failure.
    """
    import copy  # noqa: PLC0415

    try:
        guarded = copy.copy(pruner)
    except Exception:  # an uncopyable object: use it as it is
        return pruner
    for attr in dir(type(pruner)):
        method = getattr(guarded, attr, None)
        if attr.startswith("_") or not callable(method) or isinstance(getattr(type(pruner), attr), type):
            continue
        where = f"layer pruner {type(pruner).__name__}.{attr}"
        try:
            setattr(guarded, attr, _guard(pm, plugin_name, where, method))
        except (AttributeError, TypeError):  # slots or a read-only attribute
            return pruner
    return guarded


def _guard(pm: Any, plugin_name: str, where: str, method: Any) -> Any:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ModpruneError:
            raise
        except Exception as exc:  # a plugin's code may fail in any way
            raise plugin_failure(pm, plugin_name, where, exc) from exc

    if hasattr(method, "__self__"):  # torch-pruning reaches the pruner through its handlers' __self__
        call.__self__ = method.__self__  # type: ignore[attr-defined]
    return call


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


