"""The RAG building blocks on their own: fusion, filters, packing, and the
store + index pair (generations, persistence, masks, exact vs graph search)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seawall.rag.documents import Chunk
from seawall.rag.filters import FilterError, compile_filter
from seawall.rag.fusion import reciprocal_rank, weighted_scores
from seawall.rag.index import CollectionIndex
from seawall.rag.packing import cited_numbers, pack, render
from seawall.rag.stage import RagState
from seawall.rag.store import ChunkRow, DocumentInfo, SqliteRagStore

# Fusion.


def test_rrf_rewards_agreement_and_honours_weights() -> None:
    bm25 = [("a", 9.0), ("b", 5.0), ("c", 1.0)]
    dense = [("c", 0.9), ("a", 0.8), ("d", 0.7)]
    fused = dict(reciprocal_rank([bm25, dense], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert max(fused, key=fused.__getitem__) == "a"  # high in both beats first in one
    dense_only = reciprocal_rank([bm25, dense], k=60, weights=[0.0, 1.0])
    assert [item for item, _ in dense_only][:3] == ["c", "a", "d"]
    with pytest.raises(ValueError):
        reciprocal_rank([bm25], k=0)


def test_weighted_fusion_uses_score_gaps() -> None:
    bm25 = [("a", 10.0), ("b", 9.9), ("c", 0.0)]
    dense = [("b", 0.50), ("c", 0.49), ("a", 0.10)]
    fused = dict(weighted_scores([bm25, dense], weights=[0.5, 0.5]))
    assert fused["b"] == pytest.approx(0.5 * 0.99 + 0.5 * 1.0)
    assert fused["a"] == pytest.approx(0.5)  # top of BM25, bottom of dense
    assert fused["c"] == pytest.approx(0.5 * 0.975)
    # An item one ranking did not return scores 0 there.
    assert dict(weighted_scores([[("x", 1.0), ("y", 0.0)], [("y", 1.0)]], [0.5, 0.5])) == {
        "x": 0.5, "y": 0.5}


# Filters.

DOC = {"source": "docs/ops/deploy.md", "team": "ops", "year": 2024, "tags": ["faq", "ops"],
       "draft": False}


@pytest.mark.parametrize(("spec", "expected"), [
    ({"team": "ops"}, True),
    ({"team": "sales"}, False),
    ({"tags": "faq"}, True),
    ({"year": {"$gte": 2024, "$lt": 2025}}, True),
    ({"year": {"$gt": 2024}}, False),
    ({"year": {"$gt": "2020"}}, False),  # a string never orders against a number
    ({"team": {"$in": ["core", "ops"]}}, True),
    ({"team": {"$nin": ["ops"]}}, False),
    ({"missing": {"$ne": 1}}, True),
    ({"missing": 1}, False),
    ({"draft": {"$exists": True}}, True),
    ({"source": {"$prefix": "docs/ops/"}}, True),
    ({"$or": [{"team": "sales"}, {"year": 2024}]}, True),
    ({"$and": [{"team": "ops"}, {"year": 2023}]}, False),
    ({"$not": {"team": "ops"}}, False),
])
def test_filters(spec: dict, expected: bool) -> None:
    predicate = compile_filter(spec)
    assert predicate is not None and predicate(DOC) is expected


@pytest.mark.parametrize("spec", [
    {"year": {"$near": 3}}, {"$xor": []}, {"$or": []}, {"team": {"$in": "ops"}},
    {"x": {"$exists": "yes"}}, {"year": {"$gt": [1]}},
])
def test_malformed_filters_are_refused(spec: dict) -> None:
    with pytest.raises(FilterError):
        compile_filter(spec)


def test_no_filter_is_none() -> None:
    assert compile_filter(None) is None and compile_filter({}) is None


# Packing.


def _row(id_: int, text: str, start: int, end: int, doc: int = 1) -> ChunkRow:
    return ChunkRow(id=id_, document_id=doc, ordinal=id_, text=text, start=start, end=end,
                    heading_path=["Guide", "Setup"], page=None, tokens=len(text.split()),
                    source=f"doc{doc}.md", title="Guide", metadata={})


def words(text: str) -> int:
    return len(text.split())


def test_pack_keeps_order_skips_near_repeats_and_fits_the_budget() -> None:
    a = _row(1, "alpha " * 20, 0, 120)
    overlapping = _row(2, "alpha " * 18, 10, 118)  # 90% inside a
    big = _row(3, "bravo " * 200, 200, 1400)
    other_doc = _row(4, "alpha " * 20, 0, 120, doc=2)  # same span, other document
    small = _row(5, "charlie " * 5, 2000, 2040)
    chosen = pack([(a, 0.9), (overlapping, 0.8), (big, 0.7), (other_doc, 0.6), (small, 0.5)],
                  budget=70, max_sources=10, count=words)
    assert [s.chunk.id for s in chosen] == [1, 4, 5]
    assert [s.number for s in chosen] == [1, 2, 3]
    assert sum(s.tokens for s in chosen) <= 70
    assert [s.chunk.id for s in pack([(a, 1.0), (small, 0.5)], 100, 1, words)] == [1]


def test_render_numbers_sources_and_citations_parse() -> None:
    chosen = pack([(_row(1, "Use the blue cable.", 0, 19), 0.9)], 100, 5, words)
    text = render("Sources:\n{context}\nKeep {braces}.", chosen)
    assert text == ("Sources:\n[1] Guide > Setup (doc1.md)\nUse the blue cable.\n"
                    "Keep {braces}.")
    assert render("{context}", []) == "(no sources found)"
    assert cited_numbers("Plug it in [1], then wait [3][12]. See [x].") == {1, 3, 12}
    assert chosen[0].citation(cited=True)["cited"] is True


async def test_answer_citations_of_short_and_long_answers_agree() -> None:
    """A long answer is scanned on a thread: same result as on the loop."""
    chosen = pack([(_row(1, "a b", 0, 3), 0.9), (_row(2, "c d", 10, 13), 0.8)], 100, 5, words)
    state = RagState(collection="c", query="q", top_k=2, sources=chosen, candidates=2,
                     system="s")
    short = "see [2]"
    long = "x" * 200_000 + " see [2]"
    want = [False, True]
    assert [c["cited"] for c in await state.answer_citations(short)] == want
    assert [c["cited"] for c in await state.answer_citations(long)] == want


# Store + index.


def _chunks(texts: list[str]) -> list[Chunk]:
    return [Chunk(text=t, start=i * 100, end=i * 100 + len(t), heading_path=["H"],
                  tokens=words(t), ordinal=i) for i, t in enumerate(texts)]


def _info(source: str, n: int, meta: dict | None = None) -> DocumentInfo:
    return DocumentInfo(id=0, source=source, title=source.upper(), format="text",
                        content_hash=source, metadata=meta or {}, modified=None, ingested_at=0,
                        chunk_count=n, tokens=0, chars=0)


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def store(tmp_path: Path) -> SqliteRagStore:
    return SqliteRagStore(tmp_path / "rag.db").open()


def test_generation_moves_with_every_change_and_snapshot_matches(store: SqliteRagStore) -> None:
    rng = np.random.default_rng(1)
    c = store.ensure_collection("t", "docs")
    assert store.generation(c.id) == 0
    store.replace_document(c.id, _info("a", 2, {"lang": "en"}),
                           _chunks(["zebra stripes", "lion mane"]), _unit(rng, 2))
    store.replace_document(c.id, _info("b", 1), _chunks(["penguin wings"]), _unit(rng, 1))
    assert store.generation(c.id) == 2
    store.replace_document(c.id, _info("a", 1), _chunks(["zebra foals"]), _unit(rng, 1))
    snap = store.snapshot(c.id)
    assert snap.generation == 3 and len(snap.ids) == 2  # a's two old chunks are gone
    assert any("zebra foals" in t and t.startswith("A > H\n") for t in snap.texts)
    assert store.delete_documents(c.id, sources=["b"]) == 1
    assert store.generation(c.id) == 4
    assert store.delete_documents(c.id, sources=["b"]) == 0 and store.generation(c.id) == 4
    assert store.collection("other-tenant", "docs") is None


def test_index_searches_filters_and_reloads_only_its_own_generation(store: SqliteRagStore,
                                                                    tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    c = store.ensure_collection("t", "docs")
    vectors = _unit(rng, 3)
    store.replace_document(c.id, _info("a", 2, {"lang": "en"}),
                           _chunks(["zebra stripes savanna", "lion mane"]), vectors[:2])
    store.replace_document(c.id, _info("b", 1, {"lang": "de"}), _chunks(["zebra streifen"]),
                           vectors[2:])
    snap = store.snapshot(c.id)
    index = CollectionIndex.build(snap, ann_above=1000)
    top = index.bm25("zebras", 10)
    assert {snap.texts[p][0] for p, _ in top} == {"A", "B"}
    assert index.dense(vectors[1], 1)[0][0] == 1  # its own vector is nearest
    allowed = {d for d, m in index.metadata.items() if m.get("lang") == "de"}
    mask = index.mask_for(allowed)
    assert [p for p, _ in index.bm25("zebras", 10, mask)] == [2]
    assert [p for p, _ in index.dense(vectors[0], 10, mask)] == [2]

    folder = tmp_path / "idx"
    index.save(folder)
    again = CollectionIndex.load(folder, store.snapshot(c.id), ann_above=1000)
    assert again is not None and again.bm25("zebras", 10) == top
    store.delete_documents(c.id, sources=["b"])
    assert CollectionIndex.load(folder, store.snapshot(c.id), ann_above=1000) is None


def test_a_collection_without_a_single_word_is_searchable(store: SqliteRagStore,
                                                          tmp_path: Path) -> None:
    # Found by fuzzing: chunks of digits and symbols only gave bm25s an empty
    # vocabulary, and every search of the collection was a 500.
    c = store.ensure_collection("t", "symbols")
    vectors = _unit(np.random.default_rng(3), 2)
    store.replace_document(c.id, _info("!", 2), _chunks(["0 !", "?"]), vectors)
    index = CollectionIndex.build(store.snapshot(c.id), ann_above=1000)
    assert index.bm25("zebra", 10) == [] and index.dense(vectors[1], 1)[0][0] == 1
    index.save(tmp_path / "idx")
    again = CollectionIndex.load(tmp_path / "idx", store.snapshot(c.id), ann_above=1000)
    assert again is not None and again.bm25("zebra", 10) == []


def test_graph_search_agrees_with_exact_and_falls_back_under_selective_filters(
        store: SqliteRagStore) -> None:
    rng = np.random.default_rng(3)
    c = store.ensure_collection("t", "big")
    vectors = _unit(rng, 600)
    for d in range(60):
        store.replace_document(c.id, _info(f"d{d}", 10, {"shard": d % 6}),
                               _chunks([f"text {d} {i}" for i in range(10)]),
                               vectors[d * 10:(d + 1) * 10])
    snap = store.snapshot(c.id)
    graph = CollectionIndex.build(snap, ann_above=100)
    exact = CollectionIndex.build(snap, ann_above=10_000)
    queries = _unit(rng, 20)
    agree = sum(graph.dense(q, 5)[0][0] == exact.dense(q, 5)[0][0] for q in queries)
    assert agree >= 19
    rare = graph.mask_for({d for d, m in graph.metadata.items() if m["shard"] == 0})
    for q in queries[:5]:
        got = graph.dense(q, 5, rare)
        assert got == exact.dense(q, 5, rare)  # selective: exact over the allowed rows
        assert all(rare[p] for p, _ in got)


def test_batched_ingestion_keeps_each_text_with_its_own_vector(store: SqliteRagStore) -> None:
    from seawall.ml.embedder import Embedder
    from seawall.ml.tokens import TokenCounter
    from seawall.rag.chunking import ChunkOptions
    from seawall.rag.ingest import Ingestor
    from seawall.rag.loaders import load_text

    embedder = Embedder()
    ingestor = Ingestor(store, embedder, TokenCounter().count, ChunkOptions(), embed_batch=2)
    texts = ["a very long text about volcanoes and lava flows " * 8, "cats", "tax law",
             "a medium text on the history of the printing press"]
    batched = ingestor.embed_texts(texts)
    for text, vector in zip(texts, batched, strict=True):
        assert float(vector @ embedder.embed([text])[0]) > 0.99

    c = store.ensure_collection("t", "many")
    docs = [d for i, t in enumerate(texts) for d in load_text(t, f"s{i}", "text")]
    known = store.sources(c.id)
    results = ingestor.ingest_many(c.id, docs, known)
    assert [r.status for r in results] == ["added"] * 4 and len(known) == 4
    snap = store.snapshot(c.id)
    for text, vector in zip(snap.texts, snap.vectors, strict=True):
        assert float(vector @ embedder.embed([text])[0]) > 0.99  # float16 rows
    again = ingestor.ingest_many(c.id, docs, known)
    assert [r.status for r in again] == ["unchanged"] * 4
