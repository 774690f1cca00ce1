"""The RAG store on the shared Postgres: the same collections, documents and
chunks as seawall/rag/store.py, for any number of replicas.

What changes with many processes:

* Every write bumps the collection's generation in its transaction, as on
  SQLite; each replica checks it before a search (one primary-key read) and
  rebuilds its in-process BM25 index from the rows when it moved, so a
  document ingested through one replica is found through every other at
  their next search.
* Dense search runs here, on pgvector's HNSW graph (cosine), with the
  collection and the metadata filter (as the documents it allows) inside
  the query; snapshots therefore carry no vectors and a replica keeps none.
* Writers to one collection queue on its row (the generation bump comes
  first), so two replicas replacing one source cannot both insert it.

Postgres refuses NUL characters in text: they are stored as U+FFFD (one
character for one, so chunk offsets still index the document's text).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import psycopg
from pgvector import HalfVector
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from seawall.rag.documents import Chunk
from seawall.rag.store import (
    ChunkRow,
    CollectionInfo,
    DocumentInfo,
    FloatArray,
    Snapshot,
    index_text,
)
from seawall.store.pg import Postgres

__all__ = ["INDEXED_DIM", "PostgresRagStore"]

# The dimension the HNSW index of 0003_rag.sql covers (the packaged embedder's);
# vectors of another size are searched exactly.
INDEXED_DIM = 384
# HNSW candidates kept per search (pgvector's default is 40): at least k, and
# iterative scans continue when a filter rejects too many of them.
_EF_SEARCH = 100

_COLLECTION = (
    "SELECT c.id, c.tenant, c.name, c.created_at, c.updated_at, c.generation, "
    "COUNT(d.id) AS documents, COALESCE(SUM(d.chunk_count), 0) AS chunks "
    "FROM rag_collections c LEFT JOIN rag_documents d ON d.collection_id = c.id ")
_DOCUMENT = ("SELECT id, source, title, format, content_hash, metadata, modified, ingested_at, "
             "chunk_count, tokens, chars FROM rag_documents ")


def _text(s: str) -> str:
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _json(value: Any) -> Jsonb:
    """orjson's encoding (as on SQLite), without the NULs jsonb refuses."""
    dumped = orjson.dumps(value)
    if b"\\u0000" in dumped:
        dumped = orjson.dumps(_scrub(orjson.loads(dumped)))
    raw = dumped.decode()
    return Jsonb(value, dumps=lambda _: raw)


def _collection(row: dict[str, Any]) -> CollectionInfo:
    return CollectionInfo(id=row["id"], tenant=row["tenant"], name=row["name"],
                          created_at=row["created_at"], updated_at=row["updated_at"],
                          generation=row["generation"], documents=int(row["documents"]),
                          chunks=int(row["chunks"]))


def _document(row: dict[str, Any]) -> DocumentInfo:
    return DocumentInfo(**row)


class PostgresRagStore:
    """Collections, documents and chunks of every tenant, shared by every replica."""

    dense_in_store = True

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    def open(self) -> PostgresRagStore:
        return self

    def close(self) -> None:
        """The pools belong to the process (``Stores.close`` ends them)."""

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pg.sync_pool().connection() as conn:
            yield conn

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._conn() as conn:
            row = conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # Collections.

    def collection(self, tenant: str, name: str) -> CollectionInfo | None:
        rows = self._rows(_COLLECTION + "WHERE c.tenant = %s AND c.name = %s GROUP BY c.id",
                          (tenant, _text(name)))
        return _collection(rows[0]) if rows else None

    def collection_id(self, tenant: str, name: str) -> int | None:
        found = self._one("SELECT id FROM rag_collections WHERE tenant = %s AND name = %s",
                          (tenant, _text(name)))
        return None if found is None else int(found)

    def collections(self, tenant: str) -> list[CollectionInfo]:
        return [_collection(r) for r in self._rows(
            _COLLECTION + "WHERE c.tenant = %s GROUP BY c.id ORDER BY c.name", (tenant,))]

    def ensure_collection(self, tenant: str, name: str) -> CollectionInfo:
        now = time.time()
        with self._conn() as conn:
            conn.execute("INSERT INTO rag_collections (tenant, name, created_at, updated_at) "
                         "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, name) DO NOTHING",
                         (tenant, _text(name), now, now))
        info = self.collection(tenant, name)
        assert info is not None
        return info

    def delete_collection(self, tenant: str, name: str) -> bool:
        with self._conn() as conn:
            cur = conn.execute("DELETE FROM rag_collections WHERE tenant = %s AND name = %s",
                               (tenant, _text(name)))
            return cur.rowcount > 0

    def generation(self, collection_id: int) -> int | None:
        found = self._one("SELECT generation FROM rag_collections WHERE id = %s",
                          (collection_id,))
        return None if found is None else int(found)

    # Documents.

    def document(self, collection_id: int, source: str) -> DocumentInfo | None:
        rows = self._rows(_DOCUMENT + "WHERE collection_id = %s AND source = %s",
                          (collection_id, _text(source)))
        return _document(rows[0]) if rows else None

    def document_by_id(self, collection_id: int, document_id: int) -> DocumentInfo | None:
        rows = self._rows(_DOCUMENT + "WHERE collection_id = %s AND id = %s",
                          (collection_id, document_id))
        return _document(rows[0]) if rows else None

    def documents(self, collection_id: int, limit: int = 100, after_id: int = 0,
                  source_prefix: str | None = None) -> list[DocumentInfo]:
        sql = _DOCUMENT + "WHERE collection_id = %s AND id > %s"
        args: list[Any] = [collection_id, after_id]
        if source_prefix is not None:
            sql += " AND starts_with(source, %s)"
            args.append(_text(source_prefix))
        sql += " ORDER BY id LIMIT %s"
        args.append(limit)
        return [_document(r) for r in self._rows(sql, args)]

    def sources(self, collection_id: int) -> dict[str, str]:
        with self._conn() as conn:
            rows = conn.execute("SELECT source, content_hash FROM rag_documents "
                                "WHERE collection_id = %s", (collection_id,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def replace_document(self, collection_id: int, doc: DocumentInfo, chunks: Sequence[Chunk],
                         vectors: FloatArray) -> int:
        """Store ``doc`` and its chunks, replacing any document with its source,
        in one transaction; returns the document's id."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        halves = np.asarray(vectors, dtype=np.float16)
        with self._conn() as conn, conn.transaction():
            # First: it locks the collection's row, so writers to it queue here
            # (no row: the insert below fails on its foreign key, as on SQLite).
            _bump(conn, collection_id)
            conn.execute("DELETE FROM rag_documents WHERE collection_id = %s AND source = %s",
                         (collection_id, _text(doc.source)))
            row = conn.execute(
                "INSERT INTO rag_documents (collection_id, source, title, format, content_hash, "
                "metadata, modified, ingested_at, chunk_count, tokens, chars) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (collection_id, _text(doc.source), _text(doc.title), _text(doc.format),
                 doc.content_hash, _json(doc.metadata), doc.modified, doc.ingested_at,
                 len(chunks), doc.tokens, doc.chars)).fetchone()
            assert row is not None
            doc_id = int(row[0])
            if chunks:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO rag_chunks (document_id, collection_id, ordinal, text, "
                        "start_offset, end_offset, heading_path, page, tokens, embedding) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [(doc_id, collection_id, c.ordinal, _text(c.text), c.start, c.end,
                          _text(orjson.dumps(c.heading_path).decode()), c.page, c.tokens,
                          HalfVector(halves[i])) for i, c in enumerate(chunks)])
        return doc_id

    def delete_documents(self, collection_id: int, sources: Sequence[str] = (),
                         ids: Sequence[int] = ()) -> int:
        """Delete documents by source or id; returns how many went."""
        if not sources and not ids:
            return 0
        n = 0
        with self._conn() as conn, conn.transaction():
            _bump(conn, collection_id)
            n = conn.execute(
                "DELETE FROM rag_documents WHERE collection_id = %s "
                "AND (source = ANY(%s) OR id = ANY(%s))",
                (collection_id, [_text(s) for s in sources], [int(i) for i in ids])).rowcount
            if not n:  # nothing changed: neither does the generation
                raise psycopg.Rollback()
        return n

    # Chunks.

    def chunk_rows(self, collection_id: int, ids: Sequence[int]) -> dict[int, ChunkRow]:
        """The chunks with these ids (those still stored), with their document's fields."""
        if not ids:
            return {}
        rows = self._rows(
            "SELECT c.id, c.document_id, c.ordinal, c.text, c.start_offset, c.end_offset, "
            "c.heading_path, c.page, c.tokens, d.source, d.title, d.metadata FROM rag_chunks c "
            "JOIN rag_documents d ON d.id = c.document_id WHERE c.collection_id = %s "
            "AND c.id = ANY(%s)", (collection_id, [int(i) for i in ids]))
        return {r["id"]: ChunkRow(
            id=r["id"], document_id=r["document_id"], ordinal=r["ordinal"], text=r["text"],
            start=r["start_offset"], end=r["end_offset"],
            heading_path=orjson.loads(r["heading_path"]), page=r["page"], tokens=r["tokens"],
            source=r["source"], title=r["title"], metadata=r["metadata"]) for r in rows}

    def snapshot(self, collection_id: int) -> Snapshot:
        """What the BM25 index is built from, read in one repeatable-read
        transaction (so it matches the generation it reports). No vectors:
        dense search runs in :meth:`nearest`."""
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            gen_row = conn.execute("SELECT generation FROM rag_collections WHERE id = %s",
                                   (collection_id,)).fetchone()
            rows = conn.execute(
                "SELECT c.id, c.document_id, c.text, c.heading_path, d.title "
                "FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id "
                "WHERE c.collection_id = %s ORDER BY c.id", (collection_id,)).fetchall()
            docs = conn.execute("SELECT id, source, metadata FROM rag_documents "
                                "WHERE collection_id = %s", (collection_id,)).fetchall()
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        doc_ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
        texts = [index_text(r[4], orjson.loads(r[3]), r[2]) for r in rows]
        metadata = {int(d[0]): {"source": d[1], **d[2]} for d in docs}
        return Snapshot(generation=int(gen_row[0]) if gen_row else -1, ids=ids,
                        doc_ids=doc_ids, texts=texts,
                        vectors=np.zeros((n, 0), dtype=np.float32), metadata=metadata)

    def nearest(self, collection_id: int, vector: FloatArray, k: int,
                documents: Sequence[int] | None = None,
                exclude: Sequence[int] = ()) -> list[tuple[int, float]]:
        """pgvector HNSW (cosine) within the collection (and ``documents``)."""
        if k <= 0 or (documents is not None and len(documents) == 0):
            return []
        sql, args = self.nearest_query(collection_id, vector, k, documents, exclude)
        with self._conn() as conn, conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(_EF_SEARCH, min(k, 1000))}")
            # Keep walking the graph while the filter rejects what it finds.
            conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            rows = conn.execute(sql, args).fetchall()
        return [(int(r[0]), 1.0 - float(r[1])) for r in rows]

    @staticmethod
    def nearest_query(collection_id: int, vector: FloatArray, k: int,
                      documents: Sequence[int] | None,
                      exclude: Sequence[int] = ()) -> tuple[str, list[Any]]:
        """The SQL of :meth:`nearest`: the collection and the allowed documents
        inside the query, in the HNSW index's expression when the size fits."""
        where = "c.collection_id = %s"
        args: list[Any] = [HalfVector(np.asarray(vector, dtype=np.float16)), collection_id]
        if documents is not None:
            where += " AND c.document_id = ANY(%s)"
            args.append([int(d) for d in documents])
        if exclude:
            where += " AND NOT (c.document_id = ANY(%s))"
            args.append([int(d) for d in exclude])
        if len(vector) == INDEXED_DIM:  # the index's expression and predicate
            where += f" AND vector_dims(c.embedding) = {INDEXED_DIM}"
            distance = f"c.embedding::halfvec({INDEXED_DIM}) <=> %s::halfvec({INDEXED_DIM})"
        else:
            distance = "c.embedding <=> %s::halfvec"
        args.append(k)
        return (f"SELECT c.id, {distance} AS d FROM rag_chunks c WHERE {where} "
                "ORDER BY d LIMIT %s"), args


def _bump(conn: psycopg.Connection[Any], collection_id: int) -> None:
    """Move the generation (and lock the collection's row until commit)."""
    conn.execute("UPDATE rag_collections SET generation = generation + 1, updated_at = %s "
                 "WHERE id = %s", (time.time(), collection_id))
