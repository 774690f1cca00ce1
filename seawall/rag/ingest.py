"""Ingestion: a loaded document -> chunks -> vectors -> rows, idempotently.

A document is identified by its ``source`` within a collection. Its content
hash covers everything its chunks depend on (text, title, metadata, the
chunking options and the embedder's input limit), so re-ingesting an
unchanged file does nothing, and a changed file, or changed chunking
settings, replaces the old chunks in one transaction. Each document commits
on its own, which is what makes an interrupted ``seawall ingest`` resumable:
the next run skips what already landed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import orjson

from seawall.ml.embedder import Embedder
from seawall.rag.chunking import ChunkOptions, chunk_document
from seawall.rag.documents import Chunk, LoadedDocument
from seawall.rag.store import DocumentInfo, index_text
from seawall.rag.store_api import RagStore

__all__ = ["IngestCancelled", "IngestResult", "Ingestor", "check_cancel"]


class IngestCancelled(Exception):
    """The caller went away: the ingestion stopped between two steps (a
    document, an embedding batch). Documents already stored stay stored."""


def check_cancel(cancel: threading.Event | None) -> None:
    """Between steps of work on a worker thread: stop if the caller left
    (a thread cannot be killed; it can only be asked to stop)."""
    if cancel is not None and cancel.is_set():
        raise IngestCancelled()


@dataclass(slots=True)
class IngestResult:
    source: str
    status: Literal["added", "replaced", "unchanged"]
    document_id: int | None
    chunks: int
    embed_s: float = 0.0  # time spent embedding (the dominant cost)
    total_s: float = 0.0

    def public(self) -> dict[str, object]:
        return {"source": self.source, "status": self.status, "document_id": self.document_id,
                "chunks": self.chunks}


class Ingestor:
    """Chunks, embeds and stores documents. Thread-safe; CPU-bound: call it
    from a worker thread, not the event loop."""

    def __init__(self, store: RagStore, embedder: Embedder, count: Callable[[str], int],
                 options: ChunkOptions, embed_batch: int = 32) -> None:
        self.store = store
        self.embedder = embedder
        self.count = count
        self.options = options
        self.embed_batch = embed_batch

    def content_hash(self, doc: LoadedDocument) -> str:
        o = self.options
        recipe = (doc.format, doc.title, doc.text, doc.metadata, o.strategy, o.max_tokens,
                  o.overlap_tokens, o.min_tokens, self.embedder.max_length)
        return hashlib.sha256(orjson.dumps(recipe, option=orjson.OPT_SORT_KEYS,
                                           default=str)).hexdigest()

    def ingest(self, collection_id: int, doc: LoadedDocument,
               known: dict[str, str] | None = None) -> IngestResult:
        """Store ``doc`` unless an identical one is stored."""
        return self.ingest_many(collection_id, [doc], known)[0]

    def ingest_many(self, collection_id: int, docs: Sequence[LoadedDocument],
                    known: dict[str, str] | None = None,
                    cancel: threading.Event | None = None) -> list[IngestResult]:
        """Store each changed document (each in its own transaction), embedding
        the chunks of all of them together: small documents would otherwise
        make one-or-two-chunk model calls, and length-sorted batches pad less.
        ``known`` (source -> hash, from :meth:`RagStore.sources`) saves a query
        per document in bulk runs and is kept up to date. Setting ``cancel``
        stops the work at the next document or embedding batch
        (:class:`IngestCancelled`)."""
        t0 = time.perf_counter()
        results: list[IngestResult | None] = [None] * len(docs)
        pending: list[tuple[int, str, str | None, list[Chunk]]] = []
        for i, doc in enumerate(docs):
            check_cancel(cancel)
            digest = self.content_hash(doc)
            if known is None:
                existing = self.store.document(collection_id, doc.source)
                previous = existing.content_hash if existing else None
            else:
                previous = known.get(doc.source)
            if previous == digest:
                results[i] = IngestResult(doc.source, "unchanged", None, 0)
            else:
                pending.append((i, digest, previous, chunk_document(doc, self.options,
                                                                    self.count)))
        texts = [index_text(docs[i].title, c.heading_path, c.text)
                 for i, _, _, chunks in pending for c in chunks]
        t1 = time.perf_counter()
        vectors = self.embed_texts(texts, cancel)
        embed_s = time.perf_counter() - t1
        at = 0
        for i, digest, previous, chunks in pending:
            check_cancel(cancel)
            doc = docs[i]
            info = DocumentInfo(
                id=0, source=doc.source, title=doc.title, format=doc.format,
                content_hash=digest, metadata=doc.metadata, modified=doc.modified,
                ingested_at=time.time(), chunk_count=len(chunks),
                tokens=sum(c.tokens for c in chunks), chars=len(doc.text))
            doc_id = self.store.replace_document(collection_id, info, chunks,
                                                 vectors[at:at + len(chunks)])
            at += len(chunks)
            if known is not None:
                known[doc.source] = digest
            share = len(chunks) / max(1, len(texts))
            results[i] = IngestResult(doc.source, "added" if previous is None else "replaced",
                                      doc_id, len(chunks), embed_s * share,
                                      (time.perf_counter() - t0) * share)
        return [r for r in results if r is not None]

    def embed_texts(self, texts: Sequence[str],
                    cancel: threading.Event | None = None) -> np.ndarray:
        """Unit vectors for ``texts`` in their order, embedded in batches of
        similar length (a batch pads to its longest text)."""
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
        for b in range(0, len(order), self.embed_batch):
            check_cancel(cancel)
            batch = order[b:b + self.embed_batch]
            out[batch] = self.embedder.embed([texts[i] for i in batch])
        return out
