"""``modprune plugins``: each plugin, its version and what it registers."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list plugins and what they register")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune.plugins import default_plugin_manager

    pm = default_plugin_manager()
    _probe_model_hooks(pm)
    for info in pm.plugin_info.values():
        kind = "built-in" if info.builtin else "third-party"
        print(f"{info.name} {info.version} ({kind})")
        for family, names in sorted(info.registered.items()):
            print(f"    {family}: {', '.join(names)}")
    for name, why in pm.failed_plugins.items():
        print(f"{name} (failing, skipped: {why})")
    for name, why in pm.skipped_integrations.items():
        print(f"{name} (built-in integration, skipped: {why})")
    return 0


#: Model-phase hooks ``modprune plugins`` calls on a tiny throw-away model, so a plugin whose hook
#: raises whatever the model is shows as failing here, not only in the middle of a prune.
_PROBED = ("modprune_protected_modules", "modprune_unwrapped_parameters", "modprune_prepare_model",
           "modprune_finalize_model", "modprune_equal_width_layers")


def _probe_model_hooks(pm: object) -> None:
    from torch import nn

    from modprune.config import PruneConfig
    from modprune.plugins import plugin_failure

    args = {"model": nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), "config": PruneConfig(method="structured")}
    for hook in _PROBED:
        for impl in getattr(pm.hook, hook).get_hookimpls():  # type: ignore[attr-defined]
            info = pm.plugin_info.get(impl.plugin_name)  # type: ignore[attr-defined]
            if info is None or info.builtin or impl.plugin_name in pm.failed_plugins:  # type: ignore[attr-defined]
                continue
            try:
                impl.function(*[args[a] for a in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - any failure is the plugin's; record it
                plugin_failure(pm, impl.plugin_name, hook, exc)
