"""Nearest-neighbour search over cached questions, partitioned by scope.

A search never leaves its scope (tenant, model, prompt version, parameters,
earlier turns: :mod:`seawall.cache.keys`), so each scope is its own
partition. Most scopes are small (one per conversation prefix) and are
searched exactly with one matrix product over a NumPy array; a scope that
grows past ``exact_below`` entries (an FAQ-like stream of first questions)
moves to an HNSW graph (Spotify's voyager: hnswlib's core, maintained,
wheels with no dependencies, save/load as one file, deletes in place).
The graph keeps float32 vectors. Its 8-bit storages were tried and
dropped: voyager's ``Float8`` is fixed-point and shrank every 384-d unit
vector to ~0.94 of its length, so cosines came out ~0.11 low and five of
six true hits fell under the threshold (bench/cache_eval.py, table 5, found
it); ``E4M3`` is accurate per pair but built a graph that found the right
neighbour only 70% of the time. The caller still re-scores candidates from
the stored vectors before applying the threshold. An empty graph costs
~2.6 MB, which is why small scopes do not get one.

(usearch was the first choice; its wheels link their own static
libstdc++, and importing it before llama.cpp loads a model makes the
model's tokenizer fail with ``std::bad_cast``.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from voyager import Index, Space, StorageDataType

from seawall.cache.store import Vector

MANIFEST = "manifest.json"


class _Exact:
    """A small partition: ids and unit vectors in growable arrays."""

    __slots__ = ("ids", "vectors", "n", "where")

    def __init__(self, dim: int) -> None:
        self.ids = np.zeros(8, dtype=np.int64)
        self.vectors = np.zeros((8, dim), dtype=np.float32)
        self.n = 0
        self.where: dict[int, int] = {}

    def add(self, id_: int, vector: Vector) -> None:
        if id_ in self.where:
            self.vectors[self.where[id_]] = vector
            return
        if self.n == len(self.ids):
            self.ids = np.resize(self.ids, 2 * self.n)
            grown = np.zeros((2 * self.n, self.vectors.shape[1]), dtype=np.float32)
            grown[: self.n] = self.vectors
            self.vectors = grown
        self.ids[self.n] = id_
        self.vectors[self.n] = vector
        self.where[id_] = self.n
        self.n += 1

    def remove(self, id_: int) -> None:
        i = self.where.pop(id_, None)
        if i is None:
            return
        last = self.n - 1
        if i != last:  # move the last row into the hole
            moved = int(self.ids[last])
            self.ids[i] = moved
            self.vectors[i] = self.vectors[last]
            self.where[moved] = i
        self.n = last

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        if self.n == 0:
            return []
        sims = self.vectors[: self.n] @ vector
        top = np.argpartition(-sims, k)[:k] if k < self.n else np.arange(self.n)
        top = top[np.argsort(-sims[top])]
        return [(int(self.ids[i]), float(sims[i])) for i in top]


# Search breadth: voyager's default (10) missed a few true neighbours at 100k.
QUERY_EF = 64


def new_graph(dim: int) -> Index:
    """An empty cosine HNSW graph with the settings measured in bench/cache_scale.py."""
    index = Index(Space.Cosine, num_dimensions=dim, M=12, ef_construction=100,
                  storage_data_type=StorageDataType.Float32)
    index.ef = QUERY_EF
    return index


class _Graph:
    """A large partition: an HNSW graph (cosine, float32). Deleted ids
    stay in the graph as tombstones (skipped by queries) until they outnumber
    the live ones; then the graph is rebuilt from the live vectors."""

    __slots__ = ("index", "deleted")

    def __init__(self, index: Index, deleted: set[int] | None = None) -> None:
        self.index = index
        self.deleted = deleted or set()

    @property
    def n(self) -> int:
        return len(self.index) - len(self.deleted)

    def add(self, id_: int, vector: Vector) -> None:
        if id_ in self.deleted:  # ids are never reused; only a re-add after a delete
            self.index.unmark_deleted(id_)
            self.deleted.discard(id_)
        self._room_for(1)
        self.index.add_item(vector, id_)

    def add_many(self, ids: list[int], vectors: Vector) -> None:
        self._room_for(len(ids))
        self.index.add_items(vectors, ids)  # voyager spreads a batch over threads

    def _room_for(self, n: int) -> None:
        """Grow capacity by doubling: voyager otherwise grows by exactly what is
        added, copying the graph on every single add (quadratic: 20 ms a put at 1M)."""
        need = len(self.index) + n
        if need > self.index.max_elements:
            self.index.resize(max(need, 2 * self.index.max_elements, 1024))

    def remove(self, id_: int) -> None:
        if id_ in self.deleted or id_ not in self.index:
            return
        self.index.mark_deleted(id_)
        self.deleted.add(id_)
        if len(self.deleted) > max(256, self.n):
            self._rebuild()

    def _rebuild(self) -> None:
        live = [i for i in self.index.ids if i not in self.deleted]
        vectors = np.asarray(self.index.get_vectors(live), dtype=np.float32) if live else None
        self.index, self.deleted = new_graph(self.index.num_dimensions), set()
        if vectors is not None:
            self.add_many(live, vectors)

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        k = min(k, self.n)
        if k <= 0:
            return []
        ids, distances = self.index.query(vector, k=k)
        return [(int(i), 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]


class ScopedVectors:
    """Vectors by scope; ``search`` returns ``(id, cosine)`` best first."""

    def __init__(self, dim: int, exact_below: int = 2048) -> None:
        self.dim = dim
        self.exact_below = exact_below
        self._parts: dict[bytes, _Exact | _Graph] = {}
        self._scope_of: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._scope_of)

    @property
    def graphs(self) -> int:
        return sum(isinstance(p, _Graph) for p in self._parts.values())

    def add(self, scope: bytes, id_: int, vector: Vector) -> None:
        part = self._parts.get(scope)
        if part is None:
            part = self._parts[scope] = _Exact(self.dim)
        part.add(id_, vector)
        self._scope_of[id_] = scope
        if isinstance(part, _Exact) and part.n >= self.exact_below:
            self._parts[scope] = self._promote(part)

    def _promote(self, part: _Exact) -> _Graph:
        graph = _Graph(new_graph(self.dim))
        graph.add_many([int(i) for i in part.ids[: part.n]], part.vectors[: part.n])
        return graph

    def add_many(self, scope: bytes, ids: list[int], vectors: Vector) -> None:
        """Many entries of one scope at once (loading): a large batch goes straight
        into a graph, built in parallel."""
        part = self._parts.get(scope)
        if part is None and len(ids) >= self.exact_below:
            part = self._parts[scope] = _Graph(new_graph(self.dim))
        if isinstance(part, _Graph):
            fresh = [i for i, id_ in enumerate(ids) if id_ not in part.index]
            if fresh:
                part.add_many([ids[i] for i in fresh], vectors[fresh])
            for id_ in ids:
                self._scope_of[id_] = scope
            return
        for id_, vector in zip(ids, vectors, strict=True):
            self.add(scope, id_, vector)

    def remove(self, ids: Iterable[int]) -> None:
        for id_ in ids:
            scope = self._scope_of.pop(id_, None)
            if scope is None:
                continue
            part = self._parts[scope]
            part.remove(id_)
            if part.n == 0:
                del self._parts[scope]

    def has_scope(self, scope: bytes) -> bool:
        return scope in self._parts

    def search(self, scope: bytes, vector: Vector, k: int) -> list[tuple[int, float]]:
        part = self._parts.get(scope)
        return part.search(vector, k) if part is not None else []

    def ids(self) -> set[int]:
        return set(self._scope_of)

    # Persistence: graphs are saved as files (rebuilding one is slow); small
    # partitions are rebuilt from the stored vectors, which is fast.

    def save(self, folder: Path, watermark: int) -> None:
        """Write every graph and a manifest naming them and the highest entry
        id they hold; files are replaced atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        graphs = {}
        for scope, part in self._parts.items():
            if isinstance(part, _Graph):
                if part.deleted:
                    part._rebuild()  # tombstones are not worth saving
                name = scope.hex() + ".voyager"
                tmp = folder / (name + ".tmp")
                part.index.save(str(tmp))
                os.replace(tmp, folder / name)
                graphs[scope.hex()] = name
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"watermark": watermark, "dim": self.dim, "graphs": graphs}))
        os.replace(tmp, folder / MANIFEST)
        for stale in folder.glob("*.voyager"):
            if stale.name not in graphs.values():
                stale.unlink(missing_ok=True)

    def load(self, folder: Path) -> tuple[int, set[bytes]]:
        """Load the saved graphs; returns (watermark, scopes loaded). Entries
        above the watermark, and small partitions, are for the caller to add."""
        manifest = folder / MANIFEST
        if not manifest.exists():
            return 0, set()
        meta = json.loads(manifest.read_text())
        if meta.get("dim") != self.dim:
            return 0, set()
        loaded = set()
        for scope_hex, name in meta["graphs"].items():
            path = folder / name
            try:
                index = Index.load(str(path))
            except (OSError, RuntimeError, ValueError):  # an incomplete save: rebuild all
                self._parts.clear()
                self._scope_of.clear()
                return 0, set()
            if index.storage_data_type != StorageDataType.Float32:  # saved by an older version
                self._parts.clear()
                self._scope_of.clear()
                return 0, set()
            index.ef = QUERY_EF
            scope = bytes.fromhex(scope_hex)
            self._parts[scope] = _Graph(index)
            for key in index.ids:
                self._scope_of[int(key)] = scope
            loaded.add(scope)
        return int(meta["watermark"]), loaded
