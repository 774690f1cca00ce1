"""Fixtures shared across test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import FakeUpstreamClient, start_fake_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamClient]:
    """The fake OpenAI + Anthropic upstream server, one per test module."""
    url, stop = start_fake_upstream()
    try:
        yield FakeUpstreamClient(url)
    finally:
        stop()
