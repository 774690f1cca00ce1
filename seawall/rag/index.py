"""One collection's search indexes: BM25 over the chunks' words and dense
vectors over their embeddings, both built from a store snapshot and answering
for exactly that snapshot's generation.

* BM25 is bm25s (sparse matrices over NumPy/SciPy, Lucene's BM25 variant,
  Snowball stemming through PyStemmer). It has no incremental updates, so an
  index is rebuilt for a new generation (~0.13 ms a chunk on this class of
  machine) and saved, so a restart only loads it. It filters with a weight
  mask over the chunks, which no approximate engine gives for free.
* Dense search is exact (one matrix product) up to ``ann_above`` chunks,
  where it is both fast enough (~5 ms at 50k x 384) and free of recall loss;
  above that a voyager HNSW graph (the one the semantic cache uses) proposes
  candidates. A filtered search over a graph over-fetches and falls back to
  exact search on the allowed chunks when the filter is selective.
* When the store searches vectors itself (Postgres: pgvector), snapshots
  carry none and this index is BM25 only; :meth:`CollectionIndex.positions`
  maps the store's answer onto this snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np
import numpy.typing as npt
import Stemmer
from voyager import Index

from seawall.cache.vectors import new_graph
from seawall.rag.store import FloatArray, Snapshot

__all__ = ["BoolArray", "CollectionIndex", "Ranked"]

log = logging.getLogger("seawall.rag")

BoolArray = npt.NDArray[np.bool_]
Ranked = list[tuple[int, float]]  # (position in the snapshot, score), best first

MANIFEST = "manifest.json"
# A filtered graph search asks for this many times k, then filters.
_OVERFETCH = 8


def _wants_graph(snapshot: Snapshot, ann_above: int) -> bool:
    """A graph for large collections whose vectors are in the snapshot."""
    return len(snapshot.ids) > ann_above and snapshot.vectors.shape[1] > 0


def _tokenizer_args() -> dict[str, object]:
    return {"stopwords": "en", "stemmer": Stemmer.Stemmer("english"), "show_progress": False}


class CollectionIndex:
    """BM25 + dense search over one generation of one collection."""

    def __init__(self, snapshot: Snapshot, bm25: bm25s.BM25 | None,
                 graph: Index | None) -> None:
        self.generation = snapshot.generation
        self.ids = snapshot.ids
        self.doc_ids = snapshot.doc_ids
        self.vectors = snapshot.vectors
        self.metadata = snapshot.metadata
        self._bm25 = bm25
        self._graph = graph
        self._tokenize = _tokenizer_args()

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, snapshot: Snapshot, ann_above: int) -> CollectionIndex:
        bm25 = None
        if len(snapshot.ids):
            tokens = bm25s.tokenize(snapshot.texts, **_tokenizer_args())
            # No word at all (chunks of stopwords, digits or symbols): bm25s
            # cannot index an empty vocabulary (every search was a 500).
            if tokens.vocab:
                bm25 = bm25s.BM25()
                bm25.index(tokens, show_progress=False)
        graph = None
        if _wants_graph(snapshot, ann_above):
            graph = new_graph(snapshot.vectors.shape[1])
            graph.add_items(snapshot.vectors, list(range(len(snapshot.ids))))
        return cls(snapshot, bm25, graph)

    # Persistence: a folder per collection, replaced whole (write aside, rename).

    def save(self, folder: Path) -> None:
        # A name of its own: processes sharing a data folder may save at once.
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self._bm25 is not None:
            self._bm25.save(str(tmp / "bm25"), show_progress=False)
        if self._graph is not None:
            self._graph.save(str(tmp / "dense.voyager"))
        manifest = {"generation": self.generation, "chunks": len(self.ids),
                    "last_id": int(self.ids[-1]) if len(self.ids) else 0,
                    "graph": self._graph is not None, "bm25": self._bm25 is not None}
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        old = folder.with_name(f"{folder.name}.old{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path, snapshot: Snapshot, ann_above: int) -> CollectionIndex | None:
        """The saved index if it was built from exactly ``snapshot``'s rows, else None."""
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        last_id = int(snapshot.ids[-1]) if len(snapshot.ids) else 0
        if (manifest.get("generation") != snapshot.generation
                or manifest.get("chunks") != len(snapshot.ids)
                or manifest.get("last_id") != last_id
                or manifest.get("graph") != _wants_graph(snapshot, ann_above)):
            return None
        try:
            bm25 = (bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
                    if manifest.get("bm25", len(snapshot.ids) > 0) else None)
            graph = Index.load(str(folder / "dense.voyager")) if manifest["graph"] else None
        except Exception:
            log.warning("the saved index in %s could not be read; rebuilding", folder,
                        exc_info=True)
            return None
        return cls(snapshot, bm25, graph)

    # Search.

    def mask_for(self, allowed_docs: set[int]) -> BoolArray:
        """Chunks whose document passes a filter."""
        return np.isin(self.doc_ids, np.fromiter(allowed_docs, dtype=np.int64))

    def bm25(self, query: str, k: int, mask: BoolArray | None = None) -> Ranked:
        if self._bm25 is None or k <= 0:
            return []
        tokens = bm25s.tokenize([query], return_ids=False, **self._tokenize)
        if not tokens or not tokens[0]:
            return []
        k = min(k, len(self.ids))
        weights = mask.astype(np.float32) if mask is not None else None
        docs, scores = self._bm25.retrieve(tokens, k=k, show_progress=False,
                                           weight_mask=weights, n_threads=0)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

    def positions(self, found: Sequence[tuple[int, float]]) -> Ranked:
        """(chunk id, score) pairs -> (position, score), keeping only the chunks
        of this snapshot (one written since is found once the index catches up)."""
        n = len(self.ids)
        if not found or n == 0:
            return []
        wanted = np.fromiter((i for i, _ in found), dtype=np.int64, count=len(found))
        at = np.minimum(np.searchsorted(self.ids, wanted), n - 1)
        hit = self.ids[at] == wanted
        return [(int(at[j]), float(s)) for j, (_, s) in enumerate(found) if hit[j]]

    def dense(self, vector: FloatArray, k: int, mask: BoolArray | None = None) -> Ranked:
        n = len(self.ids)
        if n == 0 or k <= 0:
            return []
        if self._graph is not None and (mask is None or mask.sum() * 4 > n):
            found = self._graph_search(vector, k, mask)
            if len(found) >= min(k, int(mask.sum()) if mask is not None else n):
                return found
        return self._exact(vector, k, mask)

    def _exact(self, vector: FloatArray, k: int, mask: BoolArray | None) -> Ranked:
        if mask is None:
            rows, scores = np.arange(len(self.ids)), self.vectors @ vector
        else:
            rows = np.flatnonzero(mask)
            scores = self.vectors[rows] @ vector
        k = min(k, len(rows))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(rows[i]), float(scores[i])) for i in top]

    def _graph_search(self, vector: FloatArray, k: int, mask: BoolArray | None) -> Ranked:
        assert self._graph is not None
        want = min(len(self.ids), k * (_OVERFETCH if mask is not None else 1))
        positions, distances = self._graph.query(vector, k=want)
        out = [(int(p), 1.0 - float(d)) for p, d in zip(positions, distances, strict=True)
               if mask is None or mask[int(p)]]
        return out[:k]
