"""The cache's building blocks on their own: request keys and scopes, request
controls, the scoped vector index (exact and graph, persisted), single-flight."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seawall.api.wire import CacheControl, ChatCompletionRequest, convert
from seawall.cache.flight import Flight
from seawall.cache.keys import cache_keys
from seawall.cache.policy import bypass_reason, parse_cache_control
from seawall.cache.vectors import ScopedVectors
from seawall.errors import InvalidRequest, UpstreamError


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hello there"}], **kw}


def keys(raw: dict[str, Any], tenant: str = "t", version: str | None = None,
         user: str | None = None) -> Any:
    return cache_keys(raw, tenant, version, user)


# -- keys --

def test_delivery_fields_do_not_change_the_key() -> None:
    base = keys(_req())
    assert keys(_req(stream=True, stream_options={"include_usage": True})).exact == base.exact
    assert keys(_req(metadata={"a": "b"})).exact == base.exact


def test_text_parts_and_whitespace_are_normalised() -> None:
    text = [{"type": "text", "text": " hello there "}]
    parts = _req(messages=[{"role": "user", "content": text}])
    assert keys(parts).exact == keys(_req()).exact


@pytest.mark.parametrize("change", [
    {"temperature": 0.5}, {"max_tokens": 5}, {"model": "other"}, {"seed": 1},
    {"tools": [{"type": "function", "function": {"name": "f"}}]},
    {"response_format": {"type": "json_object"}},
])
def test_answer_changing_fields_change_key_and_scope(change: dict[str, Any]) -> None:
    a, b = keys(_req()), keys(_req(**change))
    assert a.exact != b.exact and a.scope != b.scope


def test_tenant_version_and_user_change_key_and_scope() -> None:
    base = keys(_req())
    for other in (keys(_req(), tenant="u"), keys(_req(), version="v2"),
                  keys(_req(), user="alice")):
        assert other.exact != base.exact and other.scope != base.scope


def test_scope_is_the_conversation_without_its_last_question() -> None:
    a = keys(_req(messages=[{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "q one"}]))
    b = keys(_req(messages=[{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "q two"}]))
    c = keys(_req(messages=[{"role": "system", "content": "be long"},
                            {"role": "user", "content": "q one"}]))
    assert a.scope == b.scope and a.exact != b.exact
    assert a.scope != c.scope
    assert a.text == "q one"


def test_only_a_plain_user_message_matches_semantically() -> None:
    tool = _req(messages=[{"role": "user", "content": "x"},
                          {"role": "tool", "content": "42", "tool_call_id": "c1"}])
    image = _req(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}])
    assert keys(tool).text is None and keys(image).text is None
    assert keys(_req()).text == "hello there"


# -- controls and policy --

def test_cache_control_header_and_body() -> None:
    assert parse_cache_control(None, None).read
    c = parse_cache_control("no-cache", None)
    assert not c.read and c.write
    c = parse_cache_control("No-Store", None)
    assert not c.read and not c.write
    c = parse_cache_control("max-age=30", CacheControl(max_age=10))
    assert c.read and c.max_age_s == 10  # the stricter one
    assert not parse_cache_control(None, False).write
    with pytest.raises(InvalidRequest):
        parse_cache_control("max-age=soon", None)


def test_bypass_rules() -> None:
    def req(**kw: Any) -> ChatCompletionRequest:
        return convert(_req(**kw), ChatCompletionRequest)

    assert bypass_reason(req(), 1.0) is None  # unset temperature counts as 1.0
    assert bypass_reason(req(), 0.5) == "temperature"
    assert bypass_reason(req(temperature=0), 0.0) is None
    assert bypass_reason(req(logprobs=True), 1.0) == "logprobs"


# -- vectors --

def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("exact_below", [10_000, 8])  # exact only; promoted to a graph
def test_search_stays_in_scope_and_finds_the_nearest(exact_below: int) -> None:
    rng = np.random.default_rng(0)
    vs = ScopedVectors(16, exact_below=exact_below)
    a, b = _unit(rng, 50), _unit(rng, 50)
    for i in range(50):
        vs.add(b"A", i, a[i])
        vs.add(b"B", 100 + i, b[i])
    assert (vs.graphs == 2) == (exact_below == 8)
    for i in (0, 17, 49):
        (top, sim), *_ = vs.search(b"A", a[i], 3)
        assert top == i and sim == pytest.approx(1.0, abs=1e-4)
        assert all(j >= 100 for j, _ in vs.search(b"B", a[i], 5))  # never crosses scopes
    assert vs.search(b"C", a[0], 3) == []
    vs.remove([0, 100])
    assert all(j != 0 for j, _ in vs.search(b"A", a[0], 5))
    assert len(vs) == 98


def test_graph_rebuilds_when_tombstones_outnumber_live_entries() -> None:
    rng = np.random.default_rng(1)
    vs = ScopedVectors(16, exact_below=8)
    v = _unit(rng, 600)
    for i in range(600):
        vs.add(b"A", i, v[i])
    vs.remove(range(400))
    (top, _), *_ = vs.search(b"A", v[500], 1)
    assert top == 500 and len(vs) == 200


def test_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vs = ScopedVectors(16, exact_below=8)
    v = _unit(rng, 40)
    for i in range(40):
        vs.add(b"G", i, v[i])  # a graph
    vs.add(b"S", 99, v[0])  # a small partition: rebuilt by the caller, not saved
    vs.save(tmp_path, watermark=99)
    loaded = ScopedVectors(16, exact_below=8)
    watermark, scopes = loaded.load(tmp_path)
    assert watermark == 99 and scopes == {b"G"}
    assert loaded.search(b"G", v[7], 1)[0][0] == 7
    assert loaded.search(b"S", v[0], 1) == []
    # A damaged save is ignored: everything is rebuilt from the rows.
    next(tmp_path.glob("*.voyager")).write_bytes(b"garbage")
    assert ScopedVectors(16, exact_below=8).load(tmp_path) == (0, set())


# -- single-flight --

async def _source(items: list[Any], gate: asyncio.Event, fail: Exception | None = None,
                  closed: list[bool] | None = None) -> Any:
    try:
        for i, item in enumerate(items):
            if i == 1:
                await gate.wait()
            yield item
        if fail is not None:
            raise fail
    finally:
        if closed is not None:
            closed.append(True)


async def test_flight_serves_every_reader_from_the_start() -> None:
    gate = asyncio.Event()
    flight = Flight(b"k", None)
    flight.start(_source([1, 2, 3], gate))

    async def read() -> list[Any]:
        return [x async for x in flight.read()]

    early = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(read())  # joins after the first chunk
    gate.set()
    assert await early == [1, 2, 3] and await late == [1, 2, 3]
    assert flight.complete


async def test_flight_failure_reaches_every_reader() -> None:
    gate = asyncio.Event()
    gate.set()
    flight = Flight(b"k", None)
    flight.start(_source([1, 2], gate, fail=UpstreamError("boom")))
    for _ in range(2):
        got = []
        with pytest.raises(UpstreamError):
            async for x in flight.read():
                got.append(x)
        assert got == [1, 2]
    assert not flight.complete


async def test_leader_leaving_does_not_cut_followers_but_last_reader_cancels() -> None:
    gate = asyncio.Event()
    closed: list[bool] = []
    flight = Flight(b"k", None)
    flight.start(_source([1, 2, 3], gate, closed=closed))
    leader, follower = flight.read(), flight.read()
    assert await anext(leader) == 1 and await anext(follower) == 1
    await leader.aclose()  # type: ignore[attr-defined]
    gate.set()
    assert [x async for x in follower] == [2, 3]

    gate2 = asyncio.Event()
    closed2: list[bool] = []
    flight2 = Flight(b"k2", None)
    flight2.start(_source([1, 2], gate2, closed=closed2))
    only = flight2.read()
    assert await anext(only) == 1
    await only.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)
    assert closed2 == [True] and flight2.done and not flight2.complete  # upstream stopped


# -- the store: a graph-sized scope must find what exact search finds --

def _near(rng: np.random.Generator, v: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly ``cosine`` from unit vector ``v``."""
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    return (cosine * v + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


async def test_graph_scope_serves_near_duplicates_just_over_the_threshold(
        tmp_path: Path) -> None:
    """Regression: an 8-bit graph scored cosines ~0.11 low, so a 0.93 match
    under a 0.92 threshold was never served once a scope became a graph."""
    from seawall.cache.sqlite_store import SqliteCacheStore
    from seawall.cache.store import NewEntry

    rng = np.random.default_rng(3)
    store = SqliteCacheStore(tmp_path / "c.db", max_entries=10_000, exact_below=64)
    await store.open()
    stored = _unit(rng, 300, dim=384)
    for i, v in enumerate(stored):
        await store.put(NewEntry(key=i.to_bytes(16, "little"), scope=b"s" * 16, tenant="t",
                                 model="m", prompt_version=None, text=f"q{i}", vector=v,
                                 completion={"choices": []}, prompt_tokens=1,
                                 completion_tokens=1, cost_usd=0.0, ttl_s=60))
    assert store.vectors.graphs == 1
    found = 0
    for i in range(0, 300, 10):
        query = _near(rng, stored[i], 0.93)
        got = await store.nearest(b"s" * 16, query, 5, 0.92, time.time(), None)
        found += bool(got) and got[0].text == f"q{i}"
        assert not got or got[0].similarity == pytest.approx(0.93, abs=2e-3)
    assert found == 30
    await store.close()
    for lose_the_file in (False, True):  # loaded from its file; rebuilt from the rows
        if lose_the_file:
            shutil.rmtree(tmp_path / "c.index")
        reopened = SqliteCacheStore(tmp_path / "c.db", max_entries=10_000, exact_below=64)
        await reopened.open()
        assert reopened.vectors.graphs == 1 and len(reopened.vectors) == 300
        got = await reopened.nearest(b"s" * 16, _near(rng, stored[7], 0.95), 5, 0.92,
                                     time.time(), None)
        assert got and got[0].text == "q7"
        await reopened.close()
