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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import orjson

from seawall.ml.embedder import Embedder
from seawall.rag.chunking import ChunkOptions, chunk_document
from seawall.rag.documents import Chunk, LoadedDocument
from seawall.rag.store import DocumentInfo, RagStore, index_text

__all__ = ["IngestResult", "Ingestor"]


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

    def is_current(self, collection_id: int, doc: LoadedDocument, known: dict[str, str]) -> bool:
        return known.get(doc.source) == self.content_hash(doc)

    def ingest(self, collection_id: int, doc: LoadedDocument,
               known: dict[str, str] | None = None) -> IngestResult:
        """Store ``doc`` unless an identical one is stored. ``known`` (source ->
        hash, from :meth:`RagStore.sources`) saves a query per document in bulk runs."""
        t0 = time.perf_counter()
        digest = self.content_hash(doc)
        if known is None:
            existing = self.store.document(collection_id, doc.source)
            previous = existing.content_hash if existing else None
        else:
            previous = known.get(doc.source)
        if previous == digest:
            return IngestResult(doc.source, "unchanged", None, 0)
        chunks = chunk_document(doc, self.options, self.count)
        t1 = time.perf_counter()
        vectors = self.embed(doc.title, chunks)
        embed_s = time.perf_counter() - t1
        info = DocumentInfo(
            id=0, source=doc.source, title=doc.title, format=doc.format, content_hash=digest,
            metadata=doc.metadata, modified=doc.modified, ingested_at=time.time(),
            chunk_count=len(chunks), tokens=sum(c.tokens for c in chunks), chars=len(doc.text))
        doc_id = self.store.replace_document(collection_id, info, chunks, vectors)
        if known is not None:
            known[doc.source] = digest
        return IngestResult(doc.source, "added" if previous is None else "replaced", doc_id,
                            len(chunks), embed_s, time.perf_counter() - t0)

    def embed(self, title: str, chunks: list[Chunk]) -> np.ndarray:
        texts = [index_text(title, c.heading_path, c.text) for c in chunks]
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        parts = [self.embedder.embed(texts[i:i + self.embed_batch])
                 for i in range(0, len(texts), self.embed_batch)]
        return np.concatenate(parts)
