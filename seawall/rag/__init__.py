"""Retrieval-augmented generation: loaders, structure-aware chunking, BM25 +
dense indexes, fusion, re-ranking and context packing (see docs/rag.md)."""
