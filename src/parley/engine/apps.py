"""Apps: the modules a node runs, and the tables they declare.

An app is a Python module named by the operator (``--app``) or the test (``apps=[...]``). Importing
it registers its flows; its optional ``MIGRATIONS`` list holds the SQL scripts of its own tables,
applied once each, in order, before any flow runs (the store records what was applied). A node
and a MockNetwork load apps the same way, so a test sees the same tables as production.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from parley.protocol.errors import FlowUsageError


class AppNotFoundError(FlowUsageError):
    """An app module can't be imported; the message says how to make it importable."""


def load_apps(
    apps: Iterable[str | ModuleType], paths: Sequence[str | Path] = ()
) -> list[ModuleType]:
    """Import the apps, looking in ``paths`` first (like ``--app-path``).

    Raises:
        AppNotFoundError: an app (or a module it imports) is not importable.
    """
    for path in reversed([str(Path(p).resolve()) for p in paths]):
        if path not in sys.path:
            sys.path.insert(0, path)
    modules = []
    for app in apps:
        if isinstance(app, ModuleType):
            modules.append(app)
            continue
        try:
            modules.append(importlib.import_module(app))
        except ModuleNotFoundError as exc:
            raise AppNotFoundError(
                f"app {app!r} can't be imported ({exc}). Make it importable: install it as a "
                "package (pip install -e .), point --app-path (app_path in parley.toml) at the "
                "directory that contains it, or add that directory to PYTHONPATH"
            ) from exc
    return modules


def app_migrations(modules: Iterable[ModuleType]) -> list[tuple[str, tuple[str, ...]]]:
    """Each app's name and the SQL scripts of its ``MIGRATIONS`` list (apps without one: none).

    Raises:
        FlowUsageError: ``MIGRATIONS`` is not a list of SQL strings.
    """
    found = []
    for module in modules:
        scripts = getattr(module, "MIGRATIONS", None)
        if not scripts:
            continue
        if isinstance(scripts, str) or not all(isinstance(s, str) for s in scripts):
            raise FlowUsageError(f"{module.__name__}.MIGRATIONS must be a list of SQL strings")
        found.append((module.__name__, tuple(scripts)))
    return found


__all__ = ["AppNotFoundError", "app_migrations", "load_apps"]
