"""Make a checkout's own ``migrations/`` and ``templates/`` the ``watcher.migrations`` and ``watcher.templates``.

pyproject maps those two packages onto top-level folders. An editable install
records the folders of the checkout it was made from, so tests run from another
checkout or worktree (with ``PYTHONPATH`` pointing at it) would silently load
the other checkout's migrations and templates. When the ``watcher`` package
imported is this checkout's, bind the two packages to this checkout's folders
before anything imports them.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import watcher

REPO = Path(__file__).resolve().parent


def _bind(package: str, folder: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        package, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    setattr(watcher, package.rpartition(".")[2], module)


if Path(watcher.__file__).resolve().parent == REPO / "watcher":
    for _package, _folder in (("watcher.migrations", REPO / "migrations"), ("watcher.templates", REPO / "templates")):
        _loaded = sys.modules.get(_package)
        if _loaded is None or Path(_loaded.__file__).resolve().parent != _folder:
            _bind(_package, _folder)
