"""What the RAG service needs from a store: the one interface both backends
implement (SQLite in seawall/rag/store.py, Postgres in seawall/rag/pg_store.py;
tests/contract/test_rag_store.py runs one suite against each).

Synchronous on purpose: ingestion and index building are CPU work on worker
threads, and the CLI uses the same code without an event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from seawall.rag.documents import Chunk
from seawall.rag.store import (
    ChunkRow,
    CollectionInfo,
    DocumentInfo,
    FloatArray,
    Snapshot,
)

__all__ = ["RagStore"]


class RagStore(Protocol):
    # True: dense search runs in the store (pgvector), so snapshots carry no
    # vectors and the service asks :meth:`nearest`; False: the in-process index
    # searches the snapshot's vectors.
    dense_in_store: bool

    def open(self) -> RagStore: ...

    def close(self) -> None: ...

    # Collections (a tenant's names).
    def collection(self, tenant: str, name: str) -> CollectionInfo | None: ...

    def collection_id(self, tenant: str, name: str) -> int | None: ...

    def collections(self, tenant: str) -> list[CollectionInfo]: ...

    def ensure_collection(self, tenant: str, name: str) -> CollectionInfo: ...

    def delete_collection(self, tenant: str, name: str) -> bool: ...

    def generation(self, collection_id: int) -> int | None:
        """Moves with every change to the collection's documents (None: deleted)."""
        ...

    # Documents.
    def document(self, collection_id: int, source: str) -> DocumentInfo | None: ...

    def document_by_id(self, collection_id: int, document_id: int) -> DocumentInfo | None: ...

    def documents(self, collection_id: int, limit: int = 100, after_id: int = 0,
                  source_prefix: str | None = None) -> list[DocumentInfo]: ...

    def sources(self, collection_id: int) -> dict[str, str]: ...

    def replace_document(self, collection_id: int, doc: DocumentInfo, chunks: Sequence[Chunk],
                         vectors: FloatArray) -> int: ...

    def delete_documents(self, collection_id: int, sources: Sequence[str] = (),
                         ids: Sequence[int] = ()) -> int: ...

    # Chunks.
    def chunk_rows(self, collection_id: int, ids: Sequence[int]) -> dict[int, ChunkRow]: ...

    def snapshot(self, collection_id: int) -> Snapshot: ...

    def nearest(self, collection_id: int, vector: FloatArray, k: int,
                documents: Sequence[int] | None = None,
                exclude: Sequence[int] = ()) -> list[tuple[int, float]]:
        """The ``k`` chunks closest to ``vector`` (a unit vector) by cosine, as
        (chunk id, similarity) best first: among ``documents`` when given, never
        of ``exclude`` (the shorter list says what a metadata filter allows)."""
        ...
