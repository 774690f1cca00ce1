"""Both deployments, one suite: ``backend`` runs a test on SQLite and on
Postgres (+ Redis), with Settings and a :class:`Stores` for each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from seawall.config import Settings, parse_settings
from seawall.store.factory import Stores


def backend_settings(kind: str, data_dir: Path, pg_url: str | None = None,
                     redis_url: str | None = None, **extra: Any) -> Settings:
    data: dict[str, Any] = {"data_dir": str(data_dir), **extra}
    if kind == "postgres":
        data["store"] = {"kind": "postgres", "url": pg_url}
        data["redis"] = {"url": redis_url}
    return parse_settings(data)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "postgres":
        return backend_settings("postgres", tmp_path, request.getfixturevalue("pg_url"),
                                request.getfixturevalue("redis_url"))
    return backend_settings("sqlite", tmp_path)


@pytest.fixture
async def stores(backend: Settings) -> AsyncIterator[Stores]:
    s = Stores(backend)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
