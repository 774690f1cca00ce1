"""The feedback store contract: one suite, run against SQLite and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from seawall.quality.feedback_store import Feedback, FeedbackStore
from seawall.store.factory import Stores


@pytest.fixture
async def store(stores: Stores) -> AsyncIterator[FeedbackStore]:
    s = stores.feedback()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _fb(trace: str = "t1", user: str = "u1", score: float = 1.0, **kw: object) -> Feedback:
    return Feedback(trace_id=trace, user=user, tenant="acme", score=score, **kw)  # type: ignore[arg-type]


async def test_put_then_read_every_field(store: FeedbackStore) -> None:
    assert await store.put(_fb(key_id="k1", comment="great é", categories=["tone", "facts"]))
    [got] = await store.for_trace("t1")
    assert (got.trace_id, got.user, got.tenant, got.score, got.key_id, got.comment,
            got.categories) == ("t1", "u1", "acme", 1.0, "k1", "great é", ["tone", "facts"])
    assert got.created_at > 0 and got.updated_at >= got.created_at
    assert await store.for_trace("t2") == []


async def test_a_users_second_rating_replaces_the_first(store: FeedbackStore) -> None:
    assert await store.put(_fb(score=1.0, comment="good")) is True
    assert await store.put(_fb(score=-1.0, comment=None, categories=["wrong"])) is False
    [got] = await store.for_trace("t1")
    assert (got.score, got.comment, got.categories) == (-1.0, None, ["wrong"])
    # Other users (and no user at all) each have their own rating.
    assert await store.put(_fb(user="u2", score=0.5)) is True
    assert await store.put(_fb(user="", score=-0.5)) is True
    assert await store.put(_fb(user="", score=0.0)) is False
    got_all = await store.for_trace("t1")
    assert sorted((f.user, f.score) for f in got_all) == [("", 0.0), ("u1", -1.0), ("u2", 0.5)]


async def test_another_tenant_cannot_overwrite(store: FeedbackStore) -> None:
    await store.put(_fb(score=1.0))
    other = Feedback(trace_id="t1", user="u1", tenant="evil", score=-1.0)
    await store.put(other)
    [got] = await store.for_trace("t1")
    assert (got.tenant, got.score) == ("acme", 1.0)
