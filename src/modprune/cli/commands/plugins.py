"""``modprune plugins``: each plugin, its version and what it registers."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list plugins and what they register")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modprune.plugins import default_plugin_manager

    pm = default_plugin_manager()
    for info in pm.plugin_info.values():
        kind = "built-in" if info.builtin else "third-party"
        print(f"{info.name} {info.version} ({kind})")
        for family, names in sorted(info.registered.items()):
            print(f"    {family}: {', '.join(names)}")
    for name, why in pm.failed_plugins.items():
        print(f"{name} (skipped: {why})")
    for name, why in pm.skipped_integrations.items():
        print(f"{name} (built-in integration, skipped: {why})")
    return 0

