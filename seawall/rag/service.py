"""The RAG service: collections, ingestion and search for the API, the chat
pipeline and the CLI, built once by the composition root.

Search runs: embed the query (once, shared by both indexes) -> BM25 and dense
candidates (each ``candidates`` deep, under the filter's mask) -> fusion ->
optional re-ranking of the top ``rerank.depth`` -> ``top_k``. The CPU parts
run on worker threads, so a search never holds the event loop.

Indexes live in memory per collection and are rebuilt, on a worker thread and
once however many searches wait for it, when the collection's generation in
the store has moved (an ingest through the API, or ``seawall ingest`` from
another process). Saved indexes make a restart a load, not a rebuild.
When the store searches vectors itself (Postgres: pgvector, with the filter
inside its query), the in-process index is BM25 only.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from seawall.config import RagSettings, RerankSettings, RetrievalSettings
from seawall.errors import InvalidRequest, NotFound, ShuttingDown
from seawall.ml.embedder import Embedder
from seawall.ml.tokens import TokenCounter
from seawall.observe.metrics import Metrics
from seawall.rag.chunking import ChunkOptions
from seawall.rag.documents import LoadedDocument
from seawall.rag.filters import FilterError, compile_filter
from seawall.rag.fusion import reciprocal_rank, weighted_scores
from seawall.rag.index import CollectionIndex, Ranked
from seawall.rag.ingest import IngestCancelled, Ingestor, IngestResult
from seawall.rag.quota import IngestQuota
from seawall.rag.rerank import Reranker, RerankError, build_reranker
from seawall.rag.store import ChunkRow, CollectionInfo, DocumentInfo, SqliteRagStore
from seawall.rag.store_api import RagStore

__all__ = ["Hit", "RagService", "SearchRequest", "SearchResult"]

log = logging.getLogger("seawall.rag")

MAX_QUERY_CHARS = 8000

T = TypeVar("T")
Loader = Callable[[threading.Event], Sequence[LoadedDocument]]


@dataclass(slots=True)
class SearchRequest:
    query: str
    top_k: int = 5
    filter: dict[str, Any] | None = None
    mode: str | None = None  # hybrid | bm25 | dense (None: the collection's setting)
    fusion: str | None = None  # rrf | weighted
    rerank: bool | None = None  # None: as configured


@dataclass(slots=True)
class Hit:
    chunk: ChunkRow
    score: float  # the final ranking's score (fused, or the re-ranker's)
    bm25: float | None = None
    dense: float | None = None
    fused: float | None = None
    rerank: float | None = None

    def public(self, rank: int) -> dict[str, Any]:
        c = self.chunk
        out: dict[str, Any] = {
            "rank": rank, "score": round(self.score, 6), "chunk_id": c.id,
            "document_id": c.document_id, "source": c.source, "title": c.title,
            "heading_path": c.heading_path, "start": c.start, "end": c.end, "text": c.text,
            "tokens": c.tokens, "metadata": c.metadata,
            "scores": {k: round(v, 6) for k, v in (("bm25", self.bm25), ("dense", self.dense),
                                                   ("fused", self.fused),
                                                   ("rerank", self.rerank)) if v is not None}}
        if c.page is not None:
            out["page"] = c.page
        return out


@dataclass(slots=True)
class SearchResult:
    collection: str
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    rerank_error: str | None = None  # the re-ranker failed: the fused order was kept


class RagService:
    """``store`` is the composition root's (``Stores.rag_store()``), or a path:
    a SQLite store there. Indexes are saved under ``index_dir`` (default: a
    SQLite store's folder ``/rag``; None for any other store: memory only)."""

    def __init__(self, settings: RagSettings, store: RagStore | Path, tokens: TokenCounter,
                 embedder: Embedder | None = None, metrics: Metrics | None = None, *,
                 index_dir: Path | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        if isinstance(store, str | Path):
            store = SqliteRagStore(store)
        self.store: RagStore = store
        if index_dir is None and isinstance(store, SqliteRagStore):
            index_dir = store.path.parent / "rag"
        self.index_dir = index_dir
        self.tokens = tokens
        self.embedder = embedder or Embedder(max_length=settings.embed_max_tokens)
        c = settings.chunking
        self.ingestor = Ingestor(self.store, self.embedder, tokens.count,
                                 ChunkOptions(strategy=c.strategy, max_tokens=c.max_tokens,
                                              overlap_tokens=c.overlap_tokens,
                                              min_tokens=c.min_tokens),
                                 settings.embed_batch)
        self._indexes: dict[int, CollectionIndex] = {}
        self._building: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self._rerankers: dict[RerankSettings, Reranker | None] = {}
        self.quota = IngestQuota(settings.max_concurrent_ingests_per_tenant,
                                 settings.max_concurrent_ingests, metrics,
                                 settings.ingest_bytes_per_minute_per_tenant)
        # Ingestions get their own threads: minutes of parsing and embedding
        # must not take the default pool's few workers from searches and
        # everything else the gateway runs in threads. Sized by the quota.
        self._ingest_pool = ThreadPoolExecutor(settings.max_concurrent_ingests or 4,
                                               thread_name_prefix="seawall-ingest")
        self._cancels: set[threading.Event] = set()  # of the ingestions running

    def close(self) -> None:
        for cancel in list(self._cancels):  # stop ingestions at their next step
            cancel.set()
        self._ingest_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def aclose(self) -> None:
        for r in self._rerankers.values():
            if r is not None:
                await r.close()
        self.close()

    # Collections and documents (thin async wrappers over the store).

    async def collections(self, tenant: str) -> list[CollectionInfo]:
        return await asyncio.to_thread(self.store.collections, tenant)

    async def collection(self, tenant: str, name: str) -> CollectionInfo:
        info = await asyncio.to_thread(self.store.collection, tenant, name)
        if info is None:
            raise _no_collection(name)
        return info

    async def _collection_id(self, tenant: str, name: str) -> int:
        found = await asyncio.to_thread(self.store.collection_id, tenant, name)
        if found is None:
            raise _no_collection(name)
        return found

    async def delete_collection(self, tenant: str, name: str) -> bool:
        info = await asyncio.to_thread(self.store.collection, tenant, name)
        if info is None:
            return False
        await asyncio.to_thread(self.store.delete_collection, tenant, name)
        await asyncio.to_thread(self.forget_index, info.id)
        return True

    def forget_index(self, collection_id: int) -> None:
        """Drop a deleted collection's index from memory and disk."""
        self._indexes.pop(collection_id, None)
        if self.index_dir is not None:
            shutil.rmtree(self.index_dir / str(collection_id), ignore_errors=True)

    async def ingest(self, tenant: str, name: str,
                     docs: Sequence[LoadedDocument] | Loader) -> list[IngestResult]:
        """Add or replace ``docs``; given a loader (a function of a cancel
        event that returns them), it parses them too. All of it runs on a
        worker thread: parsing, chunking and embedding grow with the input.
        Cancelling the caller stops the work at its next step (a file, a
        document, an embedding batch) and returns once the thread has."""
        def work(cancel: threading.Event) -> tuple[int, list[IngestResult]]:
            loaded = docs(cancel) if callable(docs) else docs
            info = self.store.ensure_collection(tenant, name)
            known = self.store.sources(info.id)
            return info.id, self.ingestor.ingest_many(info.id, loaded, known, cancel)

        cancel = threading.Event()
        self._cancels.add(cancel)
        try:
            collection_id, results = await in_thread(work, self._ingest_pool, cancel)
        except IngestCancelled:  # not by the client (that cancels this task): by close()
            raise ShuttingDown("The gateway is shutting down; the ingestion stopped. Send it "
                               "again: documents already stored are skipped.",
                               retry_after=1.0) from None
        finally:
            self._cancels.discard(cancel)
        if self.metrics is not None:
            for r in results:
                self.metrics.rag_ingested.labels(r.status).inc()
        if any(r.status != "unchanged" for r in results):
            # Build now, off the request, so the next search does not wait for it.
            asyncio.get_running_loop().create_task(self._prebuild(collection_id))
        return results

    async def _prebuild(self, collection_id: int) -> None:
        try:
            await asyncio.to_thread(self.index_for, collection_id)
        except Exception:
            log.exception("building the index of collection %s failed", collection_id)

    async def documents(self, tenant: str, name: str, limit: int,
                        after_id: int) -> list[DocumentInfo]:
        cid = await self._collection_id(tenant, name)
        return await asyncio.to_thread(self.store.documents, cid, limit, after_id)

    async def document(self, tenant: str, name: str, document_id: int) -> DocumentInfo:
        cid = await self._collection_id(tenant, name)
        doc = await asyncio.to_thread(self.store.document_by_id, cid, document_id)
        if doc is None:
            raise NotFound(f"No document {document_id} in collection {name!r}.",
                           code="document_not_found")
        return doc

    async def delete_documents(self, tenant: str, name: str, ids: Sequence[int] = (),
                               sources: Sequence[str] = ()) -> int:
        cid = await self._collection_id(tenant, name)
        n = await asyncio.to_thread(self.store.delete_documents, cid, sources, ids)
        if n:
            asyncio.get_running_loop().create_task(self._prebuild(cid))
        return n

    # Indexes.

    def index_for(self, collection_id: int) -> CollectionIndex:
        """The collection's index at its current generation (blocking: a worker thread)."""
        generation = self.store.generation(collection_id)
        current = self._indexes.get(collection_id)
        if current is not None and current.generation == generation:
            return current
        with self._guard:
            lock = self._building.setdefault(collection_id, threading.Lock())
        with lock:  # one build per collection; the others wait for it
            current = self._indexes.get(collection_id)
            generation = self.store.generation(collection_id)
            if current is not None and current.generation == generation:
                return current
            t0 = time.perf_counter()
            snapshot = self.store.snapshot(collection_id)
            folder = None if self.index_dir is None else self.index_dir / str(collection_id)
            index = None
            if folder is not None:
                index = CollectionIndex.load(folder, snapshot, self.settings.ann_above)
            how = "loaded"
            if index is None:
                index = CollectionIndex.build(snapshot, self.settings.ann_above)
                how = "built"
                try:
                    if folder is not None:
                        index.save(folder)
                except OSError:
                    log.warning("could not save the index of collection %s in %s",
                                collection_id, folder, exc_info=True)
            self._indexes[collection_id] = index
            if self.metrics is not None:
                self.metrics.rag_index_builds.labels(how).inc()
            log.info("rag index %s for collection %s: %d chunks, generation %d, %.2f s", how,
                     collection_id, len(index), index.generation, time.perf_counter() - t0)
            return index

    # Search.

    def reranker(self, spec: RerankSettings) -> Reranker | None:
        """One re-ranker per distinct setting (models load on first use)."""
        if spec not in self._rerankers:
            self._rerankers[spec] = build_reranker(_reranker_spec(spec), self.embedder)
        return self._rerankers[spec]

    async def search(self, tenant: str, name: str, req: SearchRequest) -> SearchResult:
        query = req.query.strip()
        if not query:
            raise InvalidRequest("query must not be empty", param="query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query is longer than {MAX_QUERY_CHARS} characters",
                                 param="query")
        try:
            predicate = compile_filter(req.filter)
        except FilterError as e:
            raise InvalidRequest(f"filter: {e}", param="filter") from None
        collection_id = await self._collection_id(tenant, name)
        cfg = self.settings.retrieval_for(name)
        mode = req.mode or cfg.mode
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        ranked, by_id = await asyncio.to_thread(
            self._candidates, collection_id, query, predicate, mode, req.fusion or cfg.fusion, cfg,
            timings)
        spec = cfg.rerank
        reranker = self.reranker(spec) if req.rerank is not False else None
        if req.rerank is True and reranker is None:
            raise InvalidRequest("rerank was asked for, but no re-ranker is configured "
                                 "(rag.retrieval.rerank.kind)", param="rerank")
        depth = max(req.top_k, spec.depth) if reranker is not None else req.top_k
        ranked = ranked[:depth]
        rows = await asyncio.to_thread(self.store.chunk_rows, collection_id,
                                       [i for i, _ in ranked])
        hits = []
        for chunk_id, score in ranked:
            row = rows.get(chunk_id)
            if row is None:  # deleted since the index was built
                continue
            b, d = by_id.get(chunk_id, (None, None))
            hits.append(Hit(row, score, bm25=b, dense=d,
                            fused=score if mode == "hybrid" else None))
        rerank_error = None
        if reranker is not None and hits:
            t1 = time.perf_counter()
            try:
                scores = await reranker.score(query, [h.chunk.text for h in hits])
            except RerankError as e:
                # A second opinion that is down must not fail the answer.
                log.warning("re-ranking failed, keeping the fused order: %s", e)
                rerank_error = str(e)
            else:
                for h, s in zip(hits, scores, strict=True):
                    h.rerank = h.score = float(s)
                hits.sort(key=lambda h: -h.score)
            timings["rerank"] = (time.perf_counter() - t1) * 1000
        timings["total"] = (time.perf_counter() - t0) * 1000
        if self.metrics is not None:
            for phase in ("embed", "bm25", "dense", "rerank", "total"):
                if phase in timings:
                    self.metrics.rag_search.labels(phase).observe(timings[phase] / 1000)
        return SearchResult(name, hits[:req.top_k], timings, rerank_error)

    def _candidates(self, collection_id: int, query: str, predicate: Any, mode: str,
                    fusion: str, cfg: RetrievalSettings, timings: dict[str, float],
                    ) -> tuple[Ranked, dict[int, tuple[float | None, float | None]]]:
        t = time.perf_counter()
        index = self.index_for(collection_id)
        timings["index"] = (time.perf_counter() - t) * 1000
        mask = None
        allowed: set[int] | None = None
        if predicate is not None:
            allowed = {doc_id for doc_id, fields in index.metadata.items() if predicate(fields)}
            mask = index.mask_for(allowed)
        k = cfg.candidates
        lexical: Ranked = []
        dense: Ranked = []
        if mode in ("hybrid", "bm25"):
            t = time.perf_counter()
            lexical = index.bm25(query, k, mask)
            timings["bm25"] = (time.perf_counter() - t) * 1000
        if mode in ("hybrid", "dense"):
            t = time.perf_counter()
            vector = self.embedder.embed([query])[0]
            timings["embed"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            query_vector = np.asarray(vector, dtype=np.float32)
            if self.store.dense_in_store:  # pgvector: the filter goes into the query
                dense = index.positions(self.store.nearest(
                    collection_id, query_vector, k, *_doc_filter(index, allowed)))
            else:
                dense = index.dense(query_vector, k, mask)
            timings["dense"] = (time.perf_counter() - t) * 1000
        # Positions -> chunk ids here, against the index that produced them.
        ids = index.ids
        scores: dict[int, tuple[float | None, float | None]] = {}
        for p, s in lexical:
            scores[int(ids[p])] = (s, None)
        for p, s in dense:
            scores[int(ids[p])] = (scores.get(int(ids[p]), (None, None))[0], s)
        if mode == "bm25":
            ranked = lexical
        elif mode == "dense":
            ranked = dense
        elif fusion == "rrf":
            w = cfg.dense_weight
            ranked = reciprocal_rank([lexical, dense], k=cfg.rrf_k, weights=[1 - w, w])
        else:
            w = cfg.dense_weight
            ranked = weighted_scores([lexical, dense], weights=[1 - w, w])
        return [(int(ids[p]), s) for p, s in ranked], scores


async def in_thread(fn: Callable[[threading.Event], T], pool: Executor | None = None,
                    cancel: threading.Event | None = None) -> T:
    """``fn(cancel)`` on a worker thread of ``pool`` (default: the loop's).
    If the caller is cancelled (its client left), ``cancel`` is set and this
    waits for ``fn`` to notice and stop before re-raising, so what the caller
    holds (an admission slot, the ingestion quota) is released only once the
    work has really ended."""
    cancel = cancel or threading.Event()
    context = contextvars.copy_context()  # as asyncio.to_thread does (the trace id for logs)
    fut = asyncio.get_running_loop().run_in_executor(pool, context.run, fn, cancel)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel.set()
        await asyncio.wait([fut])
        if not fut.cancelled():
            fut.exception()  # retrieved: IngestCancelled is the expected end
        raise


def _doc_filter(index: CollectionIndex,
                allowed: set[int] | None) -> tuple[list[int] | None, list[int]]:
    """A filter's documents for a store query, as the shorter list: those it
    allows, or those it refuses (a filter that passes nearly everything must
    not ship every document id with each search)."""
    if allowed is None:
        return None, []
    refused = index.metadata.keys() - allowed
    if len(refused) < len(allowed):
        return None, sorted(refused)
    return sorted(allowed), []


def _reranker_spec(s: RerankSettings) -> dict[str, Any] | None:
    """The config section as :func:`build_reranker` options, per kind."""
    match s.kind:
        case "maxsim":
            return {"kind": "maxsim"}
        case "http":
            return {"kind": "http", "url": s.url, "api": s.api, "model": s.model,
                    "api_key": s.api_key, "timeout_s": s.timeout_s}
        case "onnx":
            return {"kind": "onnx", "model_path": s.model_path,
                    "tokenizer_path": s.tokenizer_path}
    return None


def _no_collection(name: str) -> NotFound:
    return NotFound(f"No collection named {name!r}. Create one by adding documents: "
                    f"POST /v1/collections/{name}/documents, or `seawall ingest PATH "
                    f"--collection {name}`.", code="collection_not_found")
