"""The RAG store: collections, documents and chunks (with their vectors) in a
SQLite file of their own.

The rows are the truth; the search indexes (seawall/rag/index.py) are derived
from them and rebuilt when a collection's ``generation`` moves. Every change
to a collection's documents bumps its generation in the same transaction, so
an index built at generation N is exactly the rows at N, even when another
process (``seawall ingest`` beside a running server) wrote them.

Plain ``sqlite3`` rather than aiosqlite: ingestion and index building are CPU
work that runs on worker threads anyway (chunking, embedding, BM25), and the
CLI uses the same code without an event loop. One connection per store,
guarded by a lock; WAL lets other processes read while one writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from seawall.rag.documents import Chunk
from seawall.store.sync_sqlite import SyncSqlite

__all__ = ["ChunkRow", "CollectionInfo", "DocumentInfo", "Snapshot", "SqliteRagStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    format TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    modified REAL,
    ingested_at REAL NOT NULL,
    chunk_count INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    chars INTEGER NOT NULL,
    UNIQUE (collection_id, source)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    heading_path TEXT NOT NULL,
    page INTEGER,
    tokens INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_collection ON chunks (collection_id, id);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id);
"""

FloatArray = npt.NDArray[np.float32]


@dataclass(slots=True)
class CollectionInfo:
    id: int
    tenant: str
    name: str
    created_at: float
    updated_at: float
    generation: int
    documents: int = 0
    chunks: int = 0

    def public(self) -> dict[str, Any]:
        return {"object": "collection", "name": self.name, "documents": self.documents,
                "chunks": self.chunks, "created_at": int(self.created_at),
                "updated_at": int(self.updated_at), "generation": self.generation}


@dataclass(slots=True)
class DocumentInfo:
    id: int
    source: str
    title: str
    format: str
    content_hash: str
    metadata: dict[str, Any]
    modified: float | None
    ingested_at: float
    chunk_count: int
    tokens: int
    chars: int

    def public(self) -> dict[str, Any]:
        return {"object": "document", "id": self.id, "source": self.source,
                "title": self.title, "format": self.format, "metadata": self.metadata,
                "modified": self.modified, "ingested_at": self.ingested_at,
                "chunks": self.chunk_count, "tokens": self.tokens, "chars": self.chars,
                "content_hash": self.content_hash}


@dataclass(slots=True)
class ChunkRow:
    """A chunk as the indexes and the API see it (no vector)."""

    id: int
    document_id: int
    ordinal: int
    text: str
    start: int
    end: int
    heading_path: list[str]
    page: int | None
    tokens: int
    source: str
    title: str
    metadata: dict[str, Any]


def _document(row: sqlite3.Row) -> DocumentInfo:
    return DocumentInfo(
        id=row["id"], source=row["source"], title=row["title"], format=row["format"],
        content_hash=row["content_hash"], metadata=orjson.loads(row["metadata"]),
        modified=row["modified"], ingested_at=row["ingested_at"],
        chunk_count=row["chunk_count"], tokens=row["tokens"], chars=row["chars"])


class SqliteRagStore(SyncSqlite):
    """Collections, documents and chunks of every tenant, in one SQLite file
    (the embedded backend of :class:`seawall.rag.store_api.RagStore`)."""

    SCHEMA = _SCHEMA
    dense_in_store = False  # the in-process index searches the snapshot's vectors

    def open(self) -> SqliteRagStore:
        super().open()
        return self

    # Collections.

    def collection(self, tenant: str, name: str) -> CollectionInfo | None:
        with self._lock:
            row = self.db.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM documents d WHERE d.collection_id = c.id) "
                "AS documents, (SELECT COALESCE(SUM(chunk_count), 0) FROM documents d "
                "WHERE d.collection_id = c.id) AS chunks FROM collections c "
                "WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
        return CollectionInfo(**dict(row)) if row else None

    def collection_id(self, tenant: str, name: str) -> int | None:
        """The id alone: what a search needs (counting documents is O(n))."""
        with self._lock:
            row = self.db.execute("SELECT id FROM collections WHERE tenant = ? AND name = ?",
                                  (tenant, name)).fetchone()
        return None if row is None else int(row[0])

    def collections(self, tenant: str) -> list[CollectionInfo]:
        with self._lock:
            rows = self.db.execute(
                "SELECT c.*, COUNT(d.id) AS documents, COALESCE(SUM(d.chunk_count), 0) AS chunks "
                "FROM collections c LEFT JOIN documents d ON d.collection_id = c.id "
                "WHERE c.tenant = ? GROUP BY c.id ORDER BY c.name", (tenant,)).fetchall()
        return [CollectionInfo(**dict(r)) for r in rows]

    def ensure_collection(self, tenant: str, name: str) -> CollectionInfo:
        now = time.time()
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO collections (tenant, name, created_at, updated_at) "
                       "VALUES (?, ?, ?, ?)", (tenant, name, now, now))
        info = self.collection(tenant, name)
        assert info is not None
        return info

    def delete_collection(self, tenant: str, name: str) -> bool:
        with self._write() as db:
            cur = db.execute("DELETE FROM collections WHERE tenant = ? AND name = ?",
                             (tenant, name))
        return cur.rowcount > 0

    def generation(self, collection_id: int) -> int | None:
        """The collection's generation (None: deleted): checked before every search."""
        with self._lock:
            row = self.db.execute("SELECT generation FROM collections WHERE id = ?",
                                  (collection_id,)).fetchone()
        return None if row is None else int(row[0])

    # Documents.

    def document(self, collection_id: int, source: str) -> DocumentInfo | None:
        with self._lock:
            row = self.db.execute("SELECT * FROM documents WHERE collection_id = ? AND source = ?",
                                  (collection_id, source)).fetchone()
        return _document(row) if row else None

    def document_by_id(self, collection_id: int, document_id: int) -> DocumentInfo | None:
        with self._lock:
            row = self.db.execute("SELECT * FROM documents WHERE collection_id = ? AND id = ?",
                                  (collection_id, document_id)).fetchone()
        return _document(row) if row else None

    def documents(self, collection_id: int, limit: int = 100, after_id: int = 0,
                  source_prefix: str | None = None) -> list[DocumentInfo]:
        sql = "SELECT * FROM documents WHERE collection_id = ? AND id > ?"
        args: list[Any] = [collection_id, after_id]
        if source_prefix is not None:
            sql += " AND substr(source, 1, ?) = ?"
            args += [len(source_prefix), source_prefix]
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_document(r) for r in self.db.execute(sql, args).fetchall()]

    def sources(self, collection_id: int) -> dict[str, str]:
        """Every document's source -> content hash (what ingestion compares against)."""
        with self._lock:
            return dict(self.db.execute(
                "SELECT source, content_hash FROM documents WHERE collection_id = ?",
                (collection_id,)).fetchall())

    def replace_document(self, collection_id: int, doc: DocumentInfo, chunks: Sequence[Chunk],
                         vectors: FloatArray) -> int:
        """Store ``doc`` and its chunks, replacing any document with its source,
        in one transaction; returns the document's id."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        blobs = vectors.astype(np.float16)
        with self._write() as db:
            db.execute("DELETE FROM documents WHERE collection_id = ? AND source = ?",
                       (collection_id, doc.source))
            cur = db.execute(
                "INSERT INTO documents (collection_id, source, title, format, content_hash, "
                "metadata, modified, ingested_at, chunk_count, tokens, chars) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (collection_id, doc.source, doc.title, doc.format, doc.content_hash,
                 orjson.dumps(doc.metadata).decode(), doc.modified, doc.ingested_at,
                 len(chunks), doc.tokens, doc.chars))
            doc_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO chunks (document_id, collection_id, ordinal, text, start, end, "
                "heading_path, page, tokens, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(doc_id, collection_id, c.ordinal, c.text, c.start, c.end,
                  orjson.dumps(c.heading_path).decode(), c.page, c.tokens, blobs[i].tobytes())
                 for i, c in enumerate(chunks)])
            self._bump(db, collection_id)
        return doc_id

    def delete_documents(self, collection_id: int, sources: Sequence[str] = (),
                         ids: Sequence[int] = ()) -> int:
        """Delete documents by source or id; returns how many went."""
        if not sources and not ids:
            return 0
        with self._write() as db:
            n = 0
            for source in sources:
                n += db.execute("DELETE FROM documents WHERE collection_id = ? AND source = ?",
                                (collection_id, source)).rowcount
            for id_ in ids:
                n += db.execute("DELETE FROM documents WHERE collection_id = ? AND id = ?",
                                (collection_id, id_)).rowcount
            if n:
                self._bump(db, collection_id)
        return n

    @staticmethod
    def _bump(db: sqlite3.Connection, collection_id: int) -> None:
        db.execute("UPDATE collections SET generation = generation + 1, updated_at = ? "
                   "WHERE id = ?", (time.time(), collection_id))

    # Chunks.

    def chunk_rows(self, collection_id: int, ids: Sequence[int]) -> dict[int, ChunkRow]:
        """The chunks with these ids (those still stored), with their document's fields."""
        out: dict[int, ChunkRow] = {}
        if not ids:
            return out
        marks = ",".join("?" for _ in ids)
        with self._lock:
            rows = self.db.execute(
                "SELECT c.id, c.document_id, c.ordinal, c.text, c.start, c.end, c.heading_path, "
                "c.page, c.tokens, d.source, d.title, d.metadata FROM chunks c "
                f"JOIN documents d ON d.id = c.document_id WHERE c.collection_id = ? "
                f"AND c.id IN ({marks})", (collection_id, *ids)).fetchall()
        for r in rows:
            out[r["id"]] = ChunkRow(
                id=r["id"], document_id=r["document_id"], ordinal=r["ordinal"], text=r["text"],
                start=r["start"], end=r["end"], heading_path=orjson.loads(r["heading_path"]),
                page=r["page"], tokens=r["tokens"], source=r["source"], title=r["title"],
                metadata=orjson.loads(r["metadata"]))
        return out

    def nearest(self, collection_id: int, vector: FloatArray, k: int,
                documents: Sequence[int] | None = None,
                exclude: Sequence[int] = ()) -> list[tuple[int, float]]:
        """Exact cosine search over the stored vectors (the service searches its
        in-process index instead; this is the contract's reference answer)."""
        if k <= 0 or (documents is not None and not documents):
            return []
        with self._lock:
            rows = self.db.execute("SELECT id, document_id, vector FROM chunks "
                                   "WHERE collection_id = ? ORDER BY id",
                                   (collection_id,)).fetchall()
        if documents is not None:
            allowed = set(documents)
            rows = [r for r in rows if r[1] in allowed]
        if exclude:
            refused = set(exclude)
            rows = [r for r in rows if r[1] not in refused]
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16).reshape(
            len(rows), -1).astype(np.float32)
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(rows[i][0]), float(scores[i])) for i in top]

    def snapshot(self, collection_id: int) -> Snapshot:
        """Everything an index is built from, read in one transaction (so it
        matches the generation it reports)."""
        with self._lock:
            db = self.db
            db.execute("BEGIN")
            try:
                gen_row = db.execute("SELECT generation FROM collections WHERE id = ?",
                                     (collection_id,)).fetchone()
                rows = db.execute(
                    "SELECT c.id, c.document_id, c.text, c.heading_path, c.vector, d.title "
                    "FROM chunks c JOIN documents d ON d.id = c.document_id "
                    "WHERE c.collection_id = ? ORDER BY c.id", (collection_id,)).fetchall()
                docs = db.execute("SELECT id, source, metadata FROM documents "
                                  "WHERE collection_id = ?", (collection_id,)).fetchall()
            finally:
                db.execute("COMMIT")
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        doc_ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
        texts = [index_text(r[5], orjson.loads(r[3]), r[2]) for r in rows]
        packed = b"".join(r[4] for r in rows)
        vectors = np.frombuffer(packed, dtype=np.float16).reshape(n, -1).astype(np.float32) \
            if n else np.zeros((0, 0), dtype=np.float32)
        metadata = {int(d[0]): {"source": d[1], **orjson.loads(d[2])} for d in docs}
        return Snapshot(generation=int(gen_row[0]) if gen_row else -1, ids=ids,
                        doc_ids=doc_ids, texts=texts, vectors=vectors, metadata=metadata)


def breadcrumb(title: str, heading_path: Sequence[str]) -> str:
    """``Title > Section > Subsection`` (a Markdown title is usually its first
    heading too: said once)."""
    path = list(heading_path)
    if path and path[0] == title:
        path = path[1:]
    return " > ".join(p for p in (title, *path) if p)


def index_text(title: str, heading_path: Sequence[str], text: str) -> str:
    """What both indexes see for a chunk: its document title and headings give
    a chunk cut from the middle of a section the context it lost."""
    return "\n".join(p for p in (breadcrumb(title, heading_path), text) if p)


@dataclass(slots=True)
class Snapshot:
    generation: int
    ids: npt.NDArray[np.int64]  # chunk ids, ascending
    doc_ids: npt.NDArray[np.int64]  # each chunk's document
    texts: list[str]  # index_text of each chunk
    vectors: FloatArray  # (n, dim) unit vectors
    metadata: dict[int, dict[str, Any]]  # document id -> source + metadata, for filters
