"""The RAG store contract: one suite, run against SQLite and Postgres (pgvector).

Plus what only many processes show: two RagService "replicas" on one
Postgres find each other's documents, and the HNSW index serves the query.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from seawall.config import RagSettings, StoreSettings
from seawall.rag.documents import Chunk
from seawall.rag.store import DocumentInfo, SqliteRagStore
from seawall.rag.store_api import RagStore
from seawall.store.pg import Postgres


def _postgres(url: str) -> Postgres:
    return Postgres(StoreSettings(kind="postgres", url=url))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RagStore]:
    if request.param == "sqlite":
        s = SqliteRagStore(tmp_path / "rag.db").open()
        yield s
        s.close()
        return
    from seawall.rag.pg_store import PostgresRagStore

    pg = _postgres(request.getfixturevalue("pg_url"))
    yield PostgresRagStore(pg).open()
    asyncio.run(pg.close())


def _chunks(texts: list[str]) -> list[Chunk]:
    return [Chunk(text=t, start=i * 100, end=i * 100 + len(t), heading_path=["H", "Sub"],
                  tokens=len(t.split()), ordinal=i, page=i + 1 if i else None)
            for i, t in enumerate(texts)]


def _info(source: str, meta: dict[str, Any] | None = None, hash_: str = "h") -> DocumentInfo:
    return DocumentInfo(id=0, source=source, title=source.upper(), format="text",
                        content_hash=hash_, metadata=meta or {}, modified=1.5, ingested_at=2.5,
                        chunk_count=0, tokens=7, chars=70)


def _unit(seed: int, n: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_collections_belong_to_their_tenant(store: RagStore) -> None:
    a = store.ensure_collection("t1", "docs")
    assert store.ensure_collection("t1", "docs").id == a.id  # idempotent
    b = store.ensure_collection("t2", "docs")
    store.ensure_collection("t1", "notes")
    assert b.id != a.id and a.generation == 0
    assert [c.name for c in store.collections("t1")] == ["docs", "notes"]
    assert [c.name for c in store.collections("t2")] == ["docs"]
    assert store.collection_id("t1", "docs") == a.id
    assert store.collection_id("t3", "docs") is None and store.collection("t3", "docs") is None
    store.replace_document(a.id, _info("x"), _chunks(["one", "two"]), _unit(1, 2))
    info = store.collection("t1", "docs")
    assert info is not None and (info.documents, info.chunks, info.generation) == (1, 2, 1)
    assert info.public()["chunks"] == 2
    assert store.collection("t2", "docs").documents == 0  # type: ignore[union-attr]
    assert store.delete_collection("t1", "docs") is True
    assert store.delete_collection("t1", "docs") is False
    assert store.generation(a.id) is None and store.sources(a.id) == {}
    assert store.chunk_rows(a.id, [1, 2, 3]) == {}
    assert store.collection_id("t2", "docs") == b.id  # the other tenant's is untouched


def test_generation_moves_with_every_write_and_the_snapshot_matches(store: RagStore) -> None:
    c = store.ensure_collection("t", "docs")
    assert store.generation(c.id) == 0
    store.replace_document(c.id, _info("a", {"lang": "en"}),
                           _chunks(["zebra stripes", "lion mane"]), _unit(1, 2))
    store.replace_document(c.id, _info("b", {"lang": "de"}), _chunks(["penguin wings"]),
                           _unit(2, 1))
    assert store.generation(c.id) == 2
    store.replace_document(c.id, _info("a", {"lang": "en"}, "h2"), _chunks(["zebra foals"]),
                           _unit(3, 1))
    snap = store.snapshot(c.id)
    assert snap.generation == 3 and len(snap.ids) == 2  # a's two old chunks went
    assert list(snap.ids) == sorted(snap.ids)
    assert sorted(snap.texts) == ["A > H > Sub\nzebra foals", "B > H > Sub\npenguin wings"]
    docs = {d.source: d.id for d in store.documents(c.id)}
    assert sorted(snap.metadata.values(), key=lambda m: m["source"]) == [
        {"source": "a", "lang": "en"}, {"source": "b", "lang": "de"}]
    assert set(snap.doc_ids.tolist()) == set(docs.values())
    assert snap.vectors.shape[0] == 2
    assert snap.vectors.shape[1] == (0 if store.dense_in_store else 16)
    assert store.delete_documents(c.id, sources=["b"]) == 1
    assert store.generation(c.id) == 4
    # Deleting nothing changes nothing, the generation included.
    assert store.delete_documents(c.id, sources=["b"], ids=[10_000]) == 0
    assert store.delete_documents(c.id) == 0
    assert store.generation(c.id) == 4
    assert store.delete_documents(c.id, ids=[docs["a"]]) == 1 and store.generation(c.id) == 5
    assert store.snapshot(c.id).texts == []


def test_documents_round_trip_page_and_filter_by_prefix(store: RagStore) -> None:
    c = store.ensure_collection("t", "docs")
    meta = {"lang": "en", "tags": ["faq", "ops"], "year": 2024, "nested": {"k": [1, 2.5]},
            "ünï": "cödé ✓"}
    ids = [store.replace_document(c.id, _info(f"docs/{i:02d}.md", meta, f"h{i}"),
                                  _chunks([f"text {i}"]), _unit(i, 1)) for i in range(5)]
    ids.append(store.replace_document(c.id, _info("other/x.md"), _chunks(["x"]), _unit(9, 1)))
    assert ids == sorted(ids)
    doc = store.document(c.id, "docs/03.md")
    assert doc is not None and doc.id == ids[3]
    assert (doc.title, doc.format, doc.content_hash, doc.metadata, doc.modified,
            doc.ingested_at, doc.chunk_count, doc.tokens, doc.chars) == (
        "DOCS/03.MD", "text", "h3", meta, 1.5, 2.5, 1, 7, 70)
    assert store.document_by_id(c.id, ids[3]) == doc
    other = store.ensure_collection("t", "elsewhere")
    assert store.document_by_id(other.id, ids[3]) is None  # ids are per collection
    assert store.document(c.id, "missing") is None
    page1 = store.documents(c.id, limit=2)
    page2 = store.documents(c.id, limit=2, after_id=page1[-1].id)
    assert [d.id for d in page1 + page2] == ids[:4]
    assert [d.source for d in store.documents(c.id, source_prefix="docs/")] == [
        f"docs/{i:02d}.md" for i in range(5)]
    assert store.documents(c.id, source_prefix="docs/%") == []  # no LIKE wildcards
    assert store.sources(c.id) == {**{f"docs/{i:02d}.md": f"h{i}" for i in range(5)},
                                   "other/x.md": "h"}


def test_replace_swaps_the_chunks_and_chunk_rows_carry_their_document(store: RagStore) -> None:
    c = store.ensure_collection("t", "docs")
    first = store.replace_document(c.id, _info("a", {"k": 1}), _chunks(["old one", "old two"]),
                                   _unit(1, 2))
    old_ids = list(store.snapshot(c.id).ids)
    second = store.replace_document(c.id, _info("a", {"k": 2}), _chunks(["new one", "new two"]),
                                    _unit(2, 2))
    assert second != first and store.document_by_id(c.id, first) is None
    new_ids = [int(i) for i in store.snapshot(c.id).ids]
    assert store.chunk_rows(c.id, [int(i) for i in old_ids]) == {}
    rows = store.chunk_rows(c.id, [*new_ids, 99_999])
    assert sorted(rows) == new_ids
    r = rows[new_ids[1]]
    assert (r.document_id, r.ordinal, r.text, r.start, r.end, r.heading_path, r.page, r.tokens,
            r.source, r.title, r.metadata) == (second, 1, "new two", 100, 107, ["H", "Sub"], 2,
                                               2, "a", "A", {"k": 2})
    assert rows[new_ids[0]].page is None
    elsewhere = store.ensure_collection("t2", "docs")
    assert store.chunk_rows(elsewhere.id, new_ids) == {}  # never across collections
    with pytest.raises(ValueError, match="one vector per chunk"):
        store.replace_document(c.id, _info("b"), _chunks(["x"]), _unit(3, 2))


def test_hostile_text_is_stored_and_found(store: RagStore) -> None:
    # NUL characters (Postgres refuses them in text: stored as U+FFFD there).
    c = store.ensure_collection("t", "docs")
    text = "nul\x00inside and quotes ' \" \\ %s {}"
    doc_id = store.replace_document(c.id, _info("s\x00rc", {"k\x00": "v\x00", "n": [None]}),
                                    _chunks([text]), _unit(1, 1))
    (row,) = store.chunk_rows(c.id, [int(i) for i in store.snapshot(c.id).ids]).values()
    assert row.document_id == doc_id and len(row.text) == len(text)
    assert row.text.replace("\x00", "\ufffd") == text.replace("\x00", "\ufffd")
    assert store.document(c.id, "s\x00rc") is not None  # found by the name it was given
    assert store.delete_documents(c.id, sources=["s\x00rc"]) == 1


@pytest.mark.parametrize("dim", [384, 16])  # 384: the HNSW index's size; else exact
def test_nearest_ranks_by_cosine_within_the_collection_and_documents(store: RagStore,
                                                                     dim: int) -> None:
    c = store.ensure_collection("t", "docs")
    other = store.ensure_collection("t2", "docs")
    vectors = _unit(7, 40, dim)
    doc_ids = [store.replace_document(c.id, _info(f"d{d}", {"shard": d % 2}),
                                      _chunks([f"c{d}-{i}" for i in range(4)]),
                                      vectors[d * 4:(d + 1) * 4]) for d in range(10)]
    # The other tenant holds the very same vectors: never returned.
    store.replace_document(other.id, _info("twin"), _chunks(["t"] * 40), vectors)
    ids = [int(i) for i in store.snapshot(c.id).ids]
    for q in (3, 17, 38):
        found = store.nearest(c.id, vectors[q], 5)
        assert len(found) == 5 and found[0][0] == ids[q]
        assert found[0][1] == pytest.approx(1.0, abs=1e-2)
        scores = [s for _, s in found]
        assert scores == sorted(scores, reverse=True)
        exact = sorted(((float(vectors[i] @ vectors[q]), ids[i]) for i in range(40)),
                       reverse=True)
        assert [i for i, _ in found] == [i for _, i in exact[:5]]
    allowed = [d for i, d in enumerate(doc_ids) if i % 2 == 1]
    found = store.nearest(c.id, vectors[0], 8, allowed)
    rows = store.chunk_rows(c.id, [i for i, _ in found])
    assert len(found) == 8 and {r.document_id for r in rows.values()} <= set(allowed)
    assert ids[0] not in dict(found)
    refused = [d for i, d in enumerate(doc_ids) if i % 2 == 0]
    assert store.nearest(c.id, vectors[0], 8, exclude=refused) == found
    both = store.nearest(c.id, vectors[0], 8, allowed, exclude=allowed[:1])
    owners = {r.document_id for r in store.chunk_rows(c.id, [i for i, _ in both]).values()}
    assert len(both) == 8 and owners <= set(allowed[1:])
    assert store.nearest(c.id, vectors[0], 5, []) == []
    assert store.nearest(c.id, vectors[0], 0) == []
    assert len(store.nearest(c.id, vectors[0], 100)) == 40


def test_writers_to_one_source_queue_and_one_document_remains(store: RagStore) -> None:
    c = store.ensure_collection("t", "docs")
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        try:
            for i in range(8):
                store.replace_document(c.id, _info("same", hash_=f"{seed}-{i}"),
                                       _chunks(["a", "b"]), _unit(seed * 100 + i, 2))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.documents(c.id)) == 1 and len(store.snapshot(c.id).ids) == 2
    assert store.generation(c.id) == 24


# Postgres only: the HNSW index can serve the store's query.


def test_the_hnsw_index_serves_the_dense_query(pg_url: str) -> None:
    from seawall.rag.pg_store import PostgresRagStore

    pg = _postgres(pg_url)
    store = PostgresRagStore(pg)
    c = store.ensure_collection("t", "docs")
    store.replace_document(c.id, _info("a"), _chunks(["x", "y"]), _unit(1, 2, 384))
    sql, args = store.nearest_query(c.id, _unit(2, 1, 384)[0], 5, [1, 2])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        conn.execute("SET enable_sort = off")
        plan = "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + sql.encode(), args))
    asyncio.run(pg.close())
    assert "rag_chunks_embedding" in plan, plan


# Two replicas: each RagService on its own pools, one database.


@pytest.fixture(scope="module")
def embedder() -> Any:
    from seawall.ml.embedder import Embedder

    e = Embedder(max_length=128)
    e.warm_up()
    return e


def _docs(source: str, text: str, lang: str) -> Any:
    from seawall.rag.loaders import load_text

    return load_text(text, source, metadata={"lang": lang})


async def _eventually(check: Any, within_s: float = 2.0) -> Any:
    """``check()`` until it is truthy; its last answer (the bound proves
    "another replica sees it", not a speed)."""
    deadline = time.monotonic() + within_s
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_document_ingested_through_one_replica_is_found_through_another(
        kind: str, tmp_path: Path, embedder: Any, request: pytest.FixtureRequest) -> None:
    from seawall.ml.tokens import TokenCounter
    from seawall.rag.service import RagService, SearchRequest

    pools: list[Postgres] = []

    def replica(n: int) -> RagService:
        settings = RagSettings()
        if kind == "sqlite":
            return RagService(settings, tmp_path / "rag.db", TokenCounter(), embedder,
                              index_dir=tmp_path / f"idx{n}")
        from seawall.rag.pg_store import PostgresRagStore

        pools.append(_postgres(request.getfixturevalue("pg_url")))
        return RagService(settings, PostgresRagStore(pools[-1]), TokenCounter(), embedder)

    one, three = replica(1), replica(3)
    try:
        await one.ingest("t", "kb", _docs("ops.md", "Restart the gateway with systemctl "
                                          "restart seawall.", "en"))
        first = await three.search("t", "kb", SearchRequest("how do I restart the gateway"))
        assert [h.chunk.source for h in first.hits] == ["ops.md"]

        await one.ingest("t", "kb", _docs("zoo.md", "Zebras have black and white stripes "
                                          "that confuse biting flies.", "de"))

        async def found(mode: str, filter_: dict[str, Any] | None = None) -> list[str]:
            res = await three.search("t", "kb", SearchRequest(
                "why do zebras have stripes", top_k=1, mode=mode, filter=filter_))
            return [h.chunk.source for h in res.hits]

        assert await _eventually(lambda: found("hybrid")) == ["zoo.md"]
        assert await found("dense") == ["zoo.md"] and await found("bm25") == ["zoo.md"]
        # The metadata filter holds in the dense query too.
        assert await found("dense", {"lang": "en"}) == ["ops.md"]
        assert await found("dense", {"lang": {"$in": ["de"]}}) == ["zoo.md"]
        # A filter passing most documents goes in as the ones it refuses.
        await one.ingest("t", "kb", _docs("pasta.md", "Boil the pasta in salted water.", "en"))
        assert await _eventually(lambda: found("dense", {"source": "pasta.md"})) == ["pasta.md"]
        assert await found("dense", {"lang": {"$ne": "de"}}) in (["ops.md"], ["pasta.md"])
        # Another tenant's same-named collection is another collection.
        with pytest.raises(Exception, match="No collection named 'kb'"):
            await three.search("t2", "kb", SearchRequest("zebras"))

        assert await one.delete_documents("t", "kb", sources=["zoo.md"]) == 1

        async def gone() -> bool:
            return "zoo.md" not in await found("hybrid")

        assert await _eventually(gone)
    finally:
        await one.aclose()
        await three.aclose()
        for pg in pools:
            await pg.close()
