-- RAG collections, documents and chunks with their vectors: seawall/rag/pg_store.py.
-- The rows are the truth; each replica's BM25 index is derived from them and
-- rebuilt when a collection's generation moves. Dense search runs here (pgvector).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE rag_collections (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    -- bumped in the same transaction as every change to the collection's documents
    generation BIGINT NOT NULL DEFAULT 0,
    UNIQUE (tenant, name)
);

CREATE TABLE rag_documents (
    id BIGSERIAL PRIMARY KEY,
    collection_id BIGINT NOT NULL REFERENCES rag_collections (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    format TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    metadata JSONB NOT NULL,
    modified DOUBLE PRECISION,
    ingested_at DOUBLE PRECISION NOT NULL,
    chunk_count INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    chars INTEGER NOT NULL,
    UNIQUE (collection_id, source)
);

CREATE TABLE rag_chunks (
    id BIGSERIAL PRIMARY KEY,
    document_id BIGINT NOT NULL REFERENCES rag_documents (id) ON DELETE CASCADE,
    collection_id BIGINT NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    heading_path TEXT NOT NULL,  -- a JSON list, as the SQLite store keeps it
    page INTEGER,
    tokens INTEGER NOT NULL,
    -- half precision, as the SQLite store keeps them; any dimension
    embedding HALFVEC NOT NULL
);
CREATE INDEX rag_chunks_collection ON rag_chunks (collection_id, id);
CREATE INDEX rag_chunks_document ON rag_chunks (document_id);
-- HNSW (cosine) over the packaged embedder's 384 dimensions; vectors of
-- another size are searched exactly (seawall/rag/pg_store.py INDEXED_DIM).
CREATE INDEX rag_chunks_embedding ON rag_chunks
    USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops)
    WHERE vector_dims(embedding) = 384;
