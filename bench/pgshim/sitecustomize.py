"""Benchmark-only stand-in, on PYTHONPATH for the seawall-pg targets only: until
the Postgres cache store (seawall.cache.pg_store) is on main, the store factory
cannot build a cache store for store.kind postgres, even with the cache off.
This gives it a SQLite one in the run's folder; the benchmark's cache is off,
so it is only opened and closed. When the real module exists, it is used and
this does nothing. Delete this folder once seawall.cache.pg_store has landed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
from types import ModuleType
from typing import Any

_NAME = "seawall.cache.pg_store"


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _NAME:
            return None
        if importlib.machinery.PathFinder.find_spec(name, path) is not None:
            return None  # the real one has landed
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        from seawall.cache.sqlite_store import SqliteCacheStore

        class PostgresCacheStore(SqliteCacheStore):
            def __init__(self, pg: Any, max_entries: int, on_evict: Any = None,
                         **kw: Any) -> None:
                where = os.environ.get("RUN_DIR") or tempfile.gettempdir()
                super().__init__(os.path.join(where, f"bench-cache-{os.getpid()}.db"),
                                 max_entries, on_evict=on_evict)

        module.PostgresCacheStore = PostgresCacheStore  # type: ignore[attr-defined]


sys.meta_path.insert(0, _StandIn())
