#!/usr/bin/env python3
"""Retrieval quality of Seawall's RAG pipeline on BEIR SciFact (and a graded
MS MARCO / TREC DL19 smoke test), through the shipped code: documents go in
with ``load_text`` + the service's ``Ingestor`` (default chunking: structure,
256 tokens, 32 overlap), queries go through ``RagService.search`` (BM25 from
bm25s, dense MiniLM-L6 int8, ``seawall.rag.fusion``, ``MaxSimReranker``).

How it is measured:

* Retrieval returns chunks; a document scores by its best chunk (max-pooling,
  the usual passage -> document reduction), 200 chunks are asked for to rank
  100 documents. nDCG@10 (graded gains, log2 discount, ideal from the qrels)
  and Recall@100 by pytrec_eval (trec_eval's code, as BEIR uses), cross-checked
  against a plain implementation here (used alone when pytrec_eval is absent).
* Tuning uses the TRAIN qrels only (809 queries): every query's BM25 and dense
  candidate lists (200 deep) are computed once through the collection's real
  ``CollectionIndex``, then the grid (fusion kind, rrf_k, dense_weight,
  candidates, MaxSim depth) is replayed over them with the real
  ``reciprocal_rank`` / ``weighted_scores``. MaxSim scores in the grid reuse
  each chunk's token vectors (encoded once, as ``MaxSimReranker`` encodes them).
* The TEST table (300 queries) runs every row through ``RagService.search``
  with the settings set accordingly, and prints the replayed value next to it.
  A re-ranked row is two searches: ``rerank=False, top_k=200`` (the fused
  list) and ``rerank=True, top_k=depth`` (the re-ranked head, as served), the
  head followed by the fused tail (the service re-ranks ``max(top_k, depth)``
  chunks, so one ``top_k=200`` call would re-rank all 200). Latency is the
  wall time of a ``top_k=10`` search (``top_k=depth`` when re-ranking: the
  same work), one query at a time, on a shared 2-CPU machine.

Usage (from the repo root)::

    .venv/bin/python bench/rag_eval.py            # full run: ~30 min on 2 shared cores
    .venv/bin/python bench/rag_eval.py --quick    # 100 train queries, small grid, 50 test

The full run took 31 min here with the SciFact ingestion cached (the fixed-chunking
and MS MARCO collections ingested in it, ~4 min and ~1.5 min); a first SciFact
ingestion adds ~4-5 min. Most of the rest is the MaxSim test rows (~0.4-1.5 s a
query). ``--quick`` takes ~4 min once SciFact is cached.

pytrec_eval is bench-only: ``.venv/bin/pip install --no-deps --target
/tmp/seawall-rag-eval/pylib pytrec_eval-terrier`` (``--no-deps``: its scipy
dependency is not needed, and scipy in the venv would switch bm25s to another
sparse backend than the shipped install uses).

Data is read in place from /work/shared/data (``SEAWALL_EVAL_DATA_ROOT``).
Caches live in /tmp/seawall-rag-eval/<dataset>-<fingerprint>/ (``SEAWALL_RAG_EVAL_CACHE``):
the RagService data dir (rag.db + saved indexes), the candidate lists and the
MaxSim token vectors; the fingerprint covers the chunking settings, the embedder's
input limit, the data file and the source of the code that shapes the chunks and
vectors, so a change there re-ingests. Results: bench/results/rag-eval-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import hashlib
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seawall.config import ChunkingSettings, RagSettings, RerankSettings, RetrievalSettings  # noqa: E402
from seawall.ml.embedder import Embedder  # noqa: E402
from seawall.ml.tokens import TokenCounter  # noqa: E402
from seawall.rag.fusion import reciprocal_rank, weighted_scores  # noqa: E402
from seawall.rag.loaders import load_text  # noqa: E402
from seawall.rag.rerank import MaxSimReranker  # noqa: E402
from seawall.rag.service import RagService, SearchRequest  # noqa: E402
from seawall.rag.store import index_text  # noqa: E402

DATA_ROOT = Path(os.environ.get("SEAWALL_EVAL_DATA_ROOT", "/work/shared/data"))
CACHE = Path(os.environ.get("SEAWALL_RAG_EVAL_CACHE", "/tmp/seawall-rag-eval"))
PYLIB = CACHE / "pylib"  # pytrec_eval-terrier installed with --no-deps --target
TENANT = "bench"
DEPTH = 200  # chunks asked for, to rank DOCS documents
DOCS = 100
LATENCY_TOP_K = 10
INGEST_BATCH = 32  # documents per Ingestor.ingest_many call, as seawall/rag/cli.py
REFERENCES = [  # SciFact nDCG@10, published (../shared/data/README.md)
    ("BM25 (BEIR paper)", 0.665),
    ("BM25 + cross-encoder re-rank (BEIR paper)", 0.688),
    ("BM25 + BGE-base, RRF", 0.744),
]
# Code whose change alters the stored chunks or vectors: part of the cache key.
CODE_KEY = ["seawall/rag/chunking.py", "seawall/rag/loaders", "seawall/rag/loaders.py",
            "seawall/rag/documents.py", "seawall/rag/store.py", "seawall/ml/embedder.py"]

Ranking = list[tuple[int, float]]  # (chunk id, score), best first
Qrels = dict[str, dict[str, int]]  # query id -> document id -> grade
Vectors = npt.NDArray[np.float32]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ data


@dataclass
class Dataset:
    name: str
    folder: Path
    corpus: dict[str, tuple[str, str]]  # _id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, Qrels]  # split -> qrels


def load_beir(name: str, folder: Path) -> Dataset:
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            corpus[str(row["_id"])] = (row.get("title") or "", row["text"])
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = {str(r["_id"]): r["text"] for r in map(json.loads, f)}
    qrels: dict[str, Qrels] = {}
    for path in sorted((folder / "qrels").glob("*.tsv")):
        split: Qrels = {}
        with open(path, encoding="utf-8") as f:
            next(f)  # header
            for line in f:
                qid, did, grade = line.rstrip("\n").split("\t")
                if int(grade) > 0:
                    split.setdefault(qid, {})[did] = int(grade)
        qrels[path.stem] = split
    return Dataset(name, folder, corpus, queries, qrels)


def subset(qrels: Qrels, limit: int | None) -> Qrels:
    """Every ``len/limit``-th query (sorted by id): a deterministic spread sample."""
    if limit is None or limit >= len(qrels):
        return qrels
    ids = sorted(qrels, key=lambda q: (len(q), q))
    step = len(ids) / limit
    return {ids[int(i * step)]: qrels[ids[int(i * step)]] for i in range(limit)}


# ------------------------------------------------------------------ metrics


def _pytrec_eval() -> Any:
    try:
        import pytrec_eval
    except ImportError:
        if not PYLIB.is_dir():
            return None
        sys.path.append(str(PYLIB))
        try:
            import pytrec_eval
        except ImportError:
            return None
    return pytrec_eval


PYTREC = _pytrec_eval()


def doc_run(sources: Iterable[str], n: int = DOCS) -> dict[str, float]:
    """Chunks best first -> the first ``n`` distinct documents, scored so that
    sorting by score gives back this order (max-pooling over chunks)."""
    order: list[str] = []
    seen: set[str] = set()
    for s in sources:
        if s not in seen:
            seen.add(s)
            order.append(s)
            if len(order) == n:
                break
    return {d: float(n - i) for i, d in enumerate(order)}


def plain_metrics(qrels: Qrels, run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """trec_eval's ndcg_cut_10 (gain = grade, 1/log2(rank + 1)) and recall_100."""
    out = {}
    for qid, rel in qrels.items():
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, (d, _) in enumerate(ranked[:10]))
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        hits = sum(1 for d, _ in ranked[:100] if d in rel)
        out[qid] = {"ndcg_cut_10": dcg / idcg if idcg else 0.0, "recall_100": hits / len(rel)}
    return out


class Scorer:
    """Mean nDCG@10 / Recall@100 over every judged query of a split (a query
    with nothing retrieved counts 0, which pytrec_eval alone would skip)."""

    def __init__(self, qrels: Qrels) -> None:
        self.qrels = qrels
        self._evaluator = (PYTREC.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
                           if PYTREC is not None else None)

    def per_query(self, run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        run = {q: r for q, r in run.items() if q in self.qrels and r}
        if self._evaluator is None:
            return plain_metrics(self.qrels, run)
        return self._evaluator.evaluate(run)

    def __call__(self, run: dict[str, dict[str, float]]) -> dict[str, float]:
        per = self.per_query(run)
        n = len(self.qrels)
        return {m: sum(per.get(q, {}).get(m, 0.0) for q in self.qrels) / n
                for m in ("ndcg_cut_10", "recall_100")}

    def check(self, run: dict[str, dict[str, float]]) -> float:
        """Largest difference between pytrec_eval and the plain implementation."""
        if self._evaluator is None:
            return 0.0
        a, b = self.per_query(run), plain_metrics(self.qrels, run)
        return max((abs(a[q][m] - b[q][m]) for q in a for m in a[q]), default=0.0)


# ------------------------------------------------------------------ the service


def code_digest() -> str:
    h = hashlib.sha256()
    for rel in CODE_KEY:  # a file, or a package's modules; absent ones are skipped
        path = REPO / rel
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []:
            h.update(f.read_bytes())
    return h.hexdigest()[:10]


def fingerprint(dataset: Dataset, settings: RagSettings) -> str:
    stat = (dataset.folder / "corpus.jsonl").stat()
    recipe = [settings.chunking.model_dump(), settings.embed_max_tokens, stat.st_size,
              int(stat.st_mtime), code_digest()]
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Collection:
    """One dataset ingested into a RagService with its own cached data dir."""

    dataset: Dataset
    service: RagService
    name: str
    id: int
    folder: Path
    ingest: dict[str, Any] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # chunk id -> document _id
    texts: dict[int, str] = field(default_factory=dict)  # chunk id -> chunk text
    index_texts: dict[int, str] = field(default_factory=dict)  # title + headings + text


def open_collection(dataset: Dataset, chunking: ChunkingSettings,
                    embedder: Embedder, tokens: TokenCounter) -> Collection:
    settings = RagSettings(chunking=chunking)
    folder = CACHE / f"{dataset.name}-{chunking.strategy}-{fingerprint(dataset, settings)}"
    service = RagService(settings, folder / "rag.db", tokens, embedder)
    info = service.store.ensure_collection(TENANT, dataset.name)
    return Collection(dataset, service, dataset.name, info.id, folder)


def ingest(col: Collection) -> None:
    """Every document through ``load_text`` and the service's Ingestor
    (``ingest_many``, 32 documents a call, as ``seawall ingest`` does), then the
    index, built or loaded."""
    svc = col.service
    known = svc.store.sources(col.id)
    docs = [load_text(text, source=_id, format="text", title=title or None)[0]
            for _id, (title, text) in col.dataset.corpus.items()]
    todo = [d for d in docs if known.get(d.source) != svc.ingestor.content_hash(d)]
    t0 = time.perf_counter()
    embed_s = chunks = 0.0
    for start in range(0, len(todo), INGEST_BATCH):  # as `seawall ingest` batches files
        for r in svc.ingestor.ingest_many(col.id, todo[start:start + INGEST_BATCH], known):
            embed_s += r.embed_s
            chunks += r.chunks
        done = min(start + INGEST_BATCH, len(todo))
        if done % 512 == 0 or done == len(todo):
            el = time.perf_counter() - t0
            log(f"{col.name}/{svc.settings.chunking.strategy}: ingested {done}/{len(todo)} "
                f"docs, {chunks:.0f} chunks, {el:.0f} s ({chunks / el:.1f} chunks/s)")
    t1 = time.perf_counter()
    index = svc.index_for(col.id)
    col.ingest = {"documents": len(docs), "ingested now": len(todo), "chunks": len(index),
                  "ingest_s": t1 - t0, "embed_s": embed_s, "index_s": time.perf_counter() - t1}
    first = col.folder / "ingest.json"  # the run that filled the cache, for later reports
    if todo:
        first.write_text(json.dumps({**col.ingest, "date": time.strftime("%Y-%m-%d %H:%M")}))
    elif first.exists():
        col.ingest["first"] = json.loads(first.read_text())
    rows = svc.store.chunk_rows(col.id, [int(i) for i in index.ids])
    col.sources = {i: r.source for i, r in rows.items()}
    col.texts = {i: r.text for i, r in rows.items()}
    col.index_texts = {i: index_text(r.title, r.heading_path, r.text) for i, r in rows.items()}


# ------------------------------------------------------------------ candidates


@dataclass
class Candidates:
    bm25: Ranking
    dense: Ranking


def candidate_lists(col: Collection, queries: dict[str, str],
                    depth: int = DEPTH) -> dict[str, Candidates]:
    """Each query's BM25 and dense chunk lists, ``depth`` deep, through the
    collection's CollectionIndex exactly as ``RagService._candidates`` asks
    them; cached per index generation."""
    svc = col.service
    index = svc.index_for(col.id)
    path = col.folder / f"candidates-g{index.generation}-d{depth}.json"
    cached: dict[str, list[Ranking]] = json.loads(path.read_text()) if path.exists() else {}
    missing = [q for q in queries if q not in cached]
    for n, qid in enumerate(missing, 1):
        text = queries[qid].strip()
        lexical = index.bm25(text, depth)
        vector = svc.embedder.embed([text])[0]
        dense = index.dense(np.asarray(vector, dtype=np.float32), depth)
        cached[qid] = [[(int(index.ids[p]), s) for p, s in lexical],
                       [(int(index.ids[p]), s) for p, s in dense]]
        if n % 250 == 0:
            log(f"candidate lists: {n}/{len(missing)}")
    if missing:
        path.write_text(json.dumps(cached))
    return {q: Candidates([(int(c), float(v)) for c, v in cached[q][0]],
                          [(int(c), float(v)) for c, v in cached[q][1]]) for q in queries}


# ------------------------------------------------------------------ configurations


@dataclass(frozen=True)
class Config:
    mode: str = "hybrid"  # hybrid | bm25 | dense
    fusion: str = "rrf"  # rrf | weighted
    rrf_k: float = 60.0
    dense_weight: float = 0.5
    candidates: int = 100
    rerank_depth: int = 0  # 0: no re-ranking

    def retrieval(self) -> RetrievalSettings:
        rerank = (RerankSettings(kind="maxsim", depth=self.rerank_depth) if self.rerank_depth
                  else RerankSettings())
        return RetrievalSettings(mode=self.mode, fusion=self.fusion, rrf_k=self.rrf_k,
                                 dense_weight=self.dense_weight, candidates=self.candidates,
                                 rerank=rerank)

    def label(self) -> str:
        if self.mode != "hybrid":
            parts = [f"{self.mode}, {self.candidates} cand."]
        elif self.fusion == "rrf":
            parts = [f"RRF k={self.rrf_k:g} w={self.dense_weight:g}, {self.candidates} cand."]
        else:
            parts = [f"weighted w={self.dense_weight:g}, {self.candidates} cand."]
        if self.rerank_depth:
            parts.append(f"MaxSim@{self.rerank_depth}")
        return " + ".join(parts)


    @classmethod
    def of(cls, r: RetrievalSettings) -> Config:
        """The config of a settings section (only MaxSim re-ranking is modelled)."""
        if r.rerank.kind not in ("none", "maxsim"):
            raise ValueError(f"re-ranker kind {r.rerank.kind!r} is not evaluated here")
        return cls(r.mode, r.fusion, r.rrf_k, r.dense_weight, r.candidates,
                   r.rerank.depth if r.rerank.kind == "maxsim" else 0)


RRF60 = Config()  # the common hybrid default: RRF k=60, equal weights, 100 candidates
SHIPPED = Config.of(RetrievalSettings())  # whatever seawall/config.py ships today
assert SHIPPED.retrieval() == RetrievalSettings(), "Config.of must round-trip the defaults"


def unique(rows: Iterable[tuple[str, Config]]) -> list[tuple[str, Config]]:
    """One row per config; a config listed twice keeps both names."""
    merged: dict[Config, str] = {}
    for name, cfg in rows:
        merged[cfg] = f"{merged[cfg]} = {name}" if cfg in merged else name
    return [(name, cfg) for cfg, name in merged.items()]


def grid(quick: bool) -> list[Config]:
    ks = [30.0, 60.0] if quick else [10.0, 30.0, 60.0, 100.0]
    ws = [0.4, 0.5, 0.6] if quick else [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    cands = [100] if quick else [50, 100, 200]
    depths = [0, 30] if quick else [0, 10, 20, 30, 50]
    fused = [Config(fusion="rrf", rrf_k=k, dense_weight=w, candidates=c)
             for k, w, c in itertools.product(ks, ws, cands)]
    fused += [Config(fusion="weighted", dense_weight=w, candidates=c)
              for w, c in itertools.product(ws, cands)]
    return [replace(cfg, rerank_depth=d) for cfg in fused for d in depths]


def fuse(c: Candidates, cfg: Config) -> Ranking:
    """What ``RagService._candidates`` ranks for this config (ids in place of
    positions: the same bijection, so the same order)."""
    lexical, dense = c.bm25[:cfg.candidates], c.dense[:cfg.candidates]
    if cfg.mode == "bm25":
        return lexical
    if cfg.mode == "dense":
        return dense
    w = cfg.dense_weight
    if cfg.fusion == "rrf":
        return reciprocal_rank([lexical, dense], k=cfg.rrf_k, weights=[1 - w, w])
    return weighted_scores([lexical, dense], weights=[1 - w, w])


# ------------------------------------------------------------------ MaxSim, cached


class MaxSimCache:
    """``MaxSimReranker``'s scores with each chunk's token vectors encoded once
    (same text, same embedder, punctuation skipped, same length cap, batches of
    16 sorted by length). Batching changes int8 activations' quantisation
    scale, so scores can differ from the live re-ranker's in the 3rd decimal:
    the test rows use the live one."""

    def __init__(self, embedder: Embedder, texts: dict[int, str], path: Path) -> None:
        ref = MaxSimReranker(embedder)
        self.embedder, self.texts, self.path = embedder, texts, path
        self.max_length, self.batch = ref.max_length, ref.batch_size
        self.passages: dict[int, npt.NDArray[np.float16]] = {}
        self.queries: dict[str, Vectors] = {}
        self.memo: dict[tuple[str, int], float] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with np.load(self.path) as z:
            ids, offsets, matrix = z["ids"], z["offsets"], z["matrix"]
        for i, cid in enumerate(ids):
            self.passages[int(cid)] = matrix[offsets[i]:offsets[i + 1]]

    def _save(self) -> None:
        ids = np.array(list(self.passages), dtype=np.int64)
        sizes = [len(self.passages[int(i)]) for i in ids]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        matrix = np.concatenate([self.passages[int(i)] for i in ids])
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, ids=ids, offsets=offsets, matrix=matrix)
        os.replace(tmp, self.path)

    def ensure(self, chunk_ids: Iterable[int]) -> None:
        todo = sorted({c for c in chunk_ids if c not in self.passages},
                      key=lambda c: len(self.texts[c]))
        t0 = time.perf_counter()
        for n, start in enumerate(range(0, len(todo), self.batch), 1):
            batch = todo[start:start + self.batch]
            vectors = self.embedder.token_vectors([self.texts[c] for c in batch],
                                                  skip_punctuation=True)
            for c, v in zip(batch, vectors, strict=True):
                self.passages[c] = v[:self.max_length].astype(np.float16)
            if n % 50 == 0:
                done = min(start + self.batch, len(todo))
                log(f"MaxSim token vectors: {done}/{len(todo)} chunks, "
                    f"{time.perf_counter() - t0:.0f} s")
            if n % 200 == 0:
                self._save()
        if todo:
            self._save()

    def score(self, qid: str, query: str, chunk_ids: Sequence[int]) -> list[float]:
        if qid not in self.queries:
            (self.queries[qid],) = self.embedder.token_vectors([query.strip()],
                                                               skip_punctuation=True)
        q = self.queries[qid]
        out = []
        for c in chunk_ids:
            key = (qid, c)
            if key not in self.memo:
                p = self.passages[c].astype(np.float32)
                self.memo[key] = float((q @ p.T).max(axis=1).mean()) if len(q) and len(p) else 0.0
            out.append(self.memo[key])
        return out


def reranked(ranking: Ranking, depth: int, scores: Callable[[list[int]], list[float]]) -> Ranking:
    """The head re-scored and re-sorted (stably, as the service does), the tail kept."""
    head = ranking[:depth]
    new = scores([c for c, _ in head])
    head = sorted(zip([c for c, _ in head], new, strict=True), key=lambda kv: -kv[1])
    return head + ranking[depth:]


# ------------------------------------------------------------------ replay (tuning)


def replay(col: Collection, cands: dict[str, Candidates], queries: dict[str, str],
           cfg: Config, maxsim: MaxSimCache | None,
           fused: dict[str, Ranking] | None = None) -> dict[str, dict[str, float]]:
    """Document runs of ``cfg`` over the cached candidate lists (``fused``: the
    lists already fused with ``cfg``'s fusion settings)."""
    run = {}
    if fused is None:
        fused = {qid: fuse(c, cfg) for qid, c in cands.items()}
    if cfg.rerank_depth and maxsim is not None:
        maxsim.ensure(cid for r in fused.values() for cid, _ in r[:cfg.rerank_depth])
    for qid in cands:
        ranking = fused[qid]
        if cfg.rerank_depth and maxsim is not None:
            ranking = reranked(ranking, cfg.rerank_depth,
                               functools.partial(maxsim.score, qid, queries[qid]))
        run[qid] = doc_run(col.sources[cid] for cid, _ in ranking[:DEPTH])
    return run


@dataclass
class GridResult:
    cfg: Config
    ndcg: float
    recall: float


def tune(col: Collection, cands: dict[str, Candidates], queries: dict[str, str],
         scorer: Scorer, configs: Sequence[Config], maxsim: MaxSimCache) -> list[GridResult]:
    depth = max(c.rerank_depth for c in configs)
    if depth:  # encode every chunk any re-ranked config will see, once
        need = {cid for cfg in {replace(c, rerank_depth=0) for c in configs}
                for c in cands.values() for cid, _ in fuse(c, cfg)[:depth]}
        log(f"MaxSim: {len(need)} distinct chunks in the grid's re-ranked heads "
            f"({len(need - set(maxsim.passages))} to encode)")
        maxsim.ensure(need)
    results = []
    t0 = time.perf_counter()
    groups: dict[Config, list[Config]] = {}
    for cfg in configs:  # configs differing only in re-ranking share their fused lists
        groups.setdefault(replace(cfg, rerank_depth=0), []).append(cfg)
    for n, (base, members) in enumerate(groups.items(), 1):
        fused = {q: fuse(c, base) for q, c in cands.items()}
        for cfg in members:
            m = scorer(replay(col, cands, queries, cfg, maxsim, fused))
            results.append(GridResult(cfg, m["ndcg_cut_10"], m["recall_100"]))
        if n % 10 == 0:
            log(f"grid: {n}/{len(groups)} fusion configs, {time.perf_counter() - t0:.0f} s")
    return results


def best(results: Sequence[GridResult], pred: Callable[[Config], bool]) -> GridResult:
    """Highest train nDCG@10; ties go to the cheaper (shallower re-rank, fewer
    candidates) config, then the grid's order."""
    pool = [r for r in results if pred(r.cfg)]
    return max(pool, key=lambda r: (round(r.ndcg, 6), -r.cfg.rerank_depth, -r.cfg.candidates))


# ------------------------------------------------------------------ the shipped path


@dataclass
class ShippedRun:
    run: dict[str, dict[str, float]]
    latency_ms: list[float]


async def shipped(col: Collection, cfg: Config, queries: dict[str, str]) -> ShippedRun:
    """Every query through ``RagService.search`` with ``cfg`` as the collection's
    retrieval settings (see the module docstring for the re-ranked rows)."""
    svc = col.service
    svc.settings = svc.settings.model_copy(update={"retrieval": cfg.retrieval()})
    if cfg.rerank_depth:
        reranker = svc.reranker(svc.settings.retrieval.rerank)
        assert reranker is not None
        reranker.warm_up()
    await svc.search(TENANT, col.name, SearchRequest("warm up", top_k=LATENCY_TOP_K))
    run, latency = {}, []
    for n, (qid, text) in enumerate(queries.items(), 1):
        full = await svc.search(TENANT, col.name, SearchRequest(text, top_k=DEPTH, rerank=False))
        t0 = time.perf_counter()
        served = await svc.search(TENANT, col.name, SearchRequest(
            text, top_k=max(LATENCY_TOP_K, cfg.rerank_depth)))
        latency.append((time.perf_counter() - t0) * 1000)
        hits = full.hits
        if cfg.rerank_depth:
            head = [h.chunk.id for h in served.hits]
            assert {h.chunk.id for h in full.hits[:len(head)]} == set(head), "heads differ"
            hits = served.hits + full.hits[len(head):]
        run[qid] = doc_run(h.chunk.source for h in hits)
        if cfg.rerank_depth and n % 50 == 0:
            log(f"{cfg.label()}: {n}/{len(queries)} queries")
    return ShippedRun(run, latency)


@dataclass
class Row:
    name: str
    cfg: Config
    ndcg: float
    recall: float
    p50_ms: float
    replayed_ndcg: float | None = None
    replayed_recall: float | None = None
    per_query: dict[str, float] = field(default_factory=dict)  # nDCG@10


async def evaluate_rows(col: Collection, rows: Sequence[tuple[str, Config]],
                        queries: dict[str, str], scorer: Scorer,
                        cands: dict[str, Candidates] | None,
                        maxsim: MaxSimCache | None) -> list[Row]:
    out = []
    for name, cfg in rows:
        t0 = time.perf_counter()
        res = await shipped(col, cfg, queries)
        m = scorer(res.run)
        per = scorer.per_query(res.run)
        row = Row(name, cfg, m["ndcg_cut_10"], m["recall_100"],
                  float(np.percentile(res.latency_ms, 50)),
                  per_query={q: per.get(q, {}).get("ndcg_cut_10", 0.0) for q in scorer.qrels})
        if cands is not None:
            r = scorer(replay(col, cands, queries, cfg, maxsim))
            row.replayed_ndcg, row.replayed_recall = r["ndcg_cut_10"], r["recall_100"]
        log(f"{col.name} {name}: nDCG@10 {row.ndcg:.4f} R@100 {row.recall:.4f} "
            f"p50 {row.p50_ms:.1f} ms ({time.perf_counter() - t0:.0f} s)")
        out.append(row)
    return out


async def maxsim_agreement(col: Collection, maxsim: MaxSimCache, cands: dict[str, Candidates],
                           queries: dict[str, str], n: int = 5, depth: int = 30) -> float:
    """Largest |cached - live| MaxSim score over a few queries' fused heads."""
    live = MaxSimReranker(col.service.embedder)
    worst = 0.0
    for qid in list(cands)[:n]:
        ids = [c for c, _ in fuse(cands[qid], RRF60)[:depth]]
        maxsim.ensure(ids)
        a = maxsim.score(qid, queries[qid], ids)
        b = await live.score(queries[qid].strip(), [col.texts[c] for c in ids])
        worst = max(worst, max(abs(x - y) for x, y in zip(a, b, strict=True)))
    return worst


# ------------------------------------------------------------------ markdown


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def environment(args: argparse.Namespace, embedder: Embedder) -> str:
    import bm25s
    import onnxruntime

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "onnxruntime": onnxruntime.__version__, "bm25s": bm25s.__version__,
                "pytrec_eval": "pytrec_eval-terrier 0.5.11" if PYTREC else "absent (plain code)"}
    cpu = platform.processor() or platform.machine()
    return "\n".join([
        "# RAG retrieval evaluation (BEIR SciFact; MS MARCO DL19 mini smoke test)", "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()},"
        " shared with other work (latencies are indicative)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- embedder: all-MiniLM-L6-v2 int8 ONNX, max_length {embedder.max_length} "
        "(RagSettings.embed_max_tokens); dense search exact (< ann_above = 50,000 chunks)",
        "- chunking: RagSettings defaults (structure, 256 tokens, 32 overlap, min 32); the "
        "indexes see `title + headings + chunk text`, MaxSim sees the chunk text",
        f"- documents ranked by their best chunk; {DEPTH} chunks asked for, {DOCS} documents "
        "kept; metrics nDCG@10 and Recall@100 (trec_eval definitions, pytrec_eval)",
        f"- command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}",
    ])


def grid_sections(results: Sequence[GridResult], n_train: int, chosen: GridResult) -> list[str]:
    by = sorted(results, key=lambda r: -r.ndcg)
    top = table(["#", "config", "train nDCG@10", "train R@100"],
                [[i + 1, r.cfg.label(), r.ndcg, r.recall] for i, r in enumerate(by[:15])])
    base = [r for r in results if r.cfg.rerank_depth == 0]
    fusion_rows = []
    for kind in ("rrf", "weighted"):
        b = best([r for r in base if r.cfg.fusion == kind], lambda c: True)
        fusion_rows.append([kind, b.cfg.label(), b.ndcg, b.recall])
    for name, cfg in (("(RRF k=60, the common default)", RRF60), ("(shipped defaults)", SHIPPED)):
        r = next((x for x in results if x.cfg == cfg), None)
        if r is not None:
            fusion_rows.append([name, cfg.label(), r.ndcg, r.recall])
    depths = sorted({r.cfg.rerank_depth for r in results})
    plain = replace(chosen.cfg, rerank_depth=0)
    depth_rows = []
    for d in depths:
        for cfg in dict.fromkeys(replace(c, rerank_depth=d) for c in (plain, SHIPPED, RRF60)):
            r = next((x for x in results if x.cfg == cfg), None)
            if r is not None:
                depth_rows.append([d or "off", cfg.label(), r.ndcg, r.recall])
    w_rows = []
    for w in sorted({r.cfg.dense_weight for r in results}):
        cells: list[object] = [w]
        for kind, k in (("rrf", 10.0), ("rrf", 30.0), ("rrf", 60.0), ("rrf", 100.0),
                        ("weighted", 60.0)):
            cfg = Config(fusion=kind, rrf_k=k, dense_weight=w, candidates=plain.candidates)
            r = next((x for x in results if x.cfg == cfg), None)
            cells.append(r.ndcg if r else None)
        w_rows.append(cells)
    return [
        f"## Tuning on TRAIN ({n_train} queries; {len(results)} configs replayed over cached "
        "candidate lists with seawall.rag.fusion; MaxSim from cached token vectors)",
        "Top 15 by train nDCG@10:", top,
        "Best per fusion kind, without re-ranking:",
        table(["fusion", "best config", "train nDCG@10", "train R@100"], fusion_rows),
        f"Train nDCG@10 by dense_weight ({plain.candidates} candidates, no re-ranking):",
        table(["dense_weight", "RRF k=10", "RRF k=30", "RRF k=60", "RRF k=100", "weighted"],
              w_rows),
        "MaxSim re-rank depth (chosen fusion, the shipped one, RRF k=60):",
        table(["depth", "config", "train nDCG@10", "train R@100"], depth_rows),
        f"**Chosen on train: {chosen.cfg.label()}** (train nDCG@10 {chosen.ndcg:.4f}).",
    ]


def paired_ci(a: dict[str, float], b: dict[str, float], n: int = 10_000) -> tuple[float, float]:
    """95% bootstrap interval of mean(a - b) over the same queries."""
    diff = np.array([a[q] - b[q] for q in b])
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def rows_table(rows: Sequence[Row], with_replay: bool = True) -> str:
    headers = ["pipeline", "settings", "nDCG@10", "Recall@100", "p50 ms",
               "nDCG@10 - RRF k=60 [95% CI]"]
    if with_replay:
        headers += ["replayed nDCG@10", "replayed R@100"]
    ref = next((r for r in rows if r.cfg == RRF60), None)
    body = []
    for r in rows:
        delta = "-"
        if ref is not None and r is not ref:
            lo, hi = paired_ci(r.per_query, ref.per_query)
            delta = f"{r.ndcg - ref.ndcg:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        cells: list[object] = [r.name, r.cfg.label(), r.ndcg, r.recall, f"{r.p50_ms:.0f}", delta]
        if with_replay:
            cells += [r.replayed_ndcg, r.replayed_recall]
        body.append(cells)
    return table(headers, body)


def maxsim_input_section(col: Collection, cands: dict[str, Candidates],
                         splits: dict[str, tuple[dict[str, str], Scorer]], plain: Config,
                         shipped_input: MaxSimCache, depths: Sequence[int]) -> list[str]:
    """Replay only: MaxSim over the chunk text (what the service passes) vs over
    the text the indexes see (title + headings + chunk text)."""
    generation = col.service.index_for(col.id).generation
    titled = MaxSimCache(col.service.embedder, col.index_texts,
                         col.folder / f"maxsim-tokens-titled-g{generation}.npz")
    rows = []
    for d in depths:
        cfg = replace(plain, rerank_depth=d)
        cells: list[object] = [d or "off"]
        for queries, scorer in splits.values():
            sub = {q: cands[q] for q in queries}
            for cache in ((shipped_input, titled) if d else (None,)):
                cells.append(scorer(replay(col, sub, queries, cfg, cache))["ndcg_cut_10"])
            if not d:
                cells.append(cells[-1])
        rows.append(cells)
    headers = ["depth"]
    for split in splits:
        headers += [f"{split}: chunk text (shipped)", f"{split}: title + headings + text"]
    return [f"### MaxSim input (replayed over {plain.label()}, nDCG@10)",
            "The service re-ranks `hit.chunk.text`; the indexes see "
            "`index_text(title, heading_path, text)`. Same re-ranker, other input:",
            table(headers, rows)]


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="100 train queries, a small grid, 50 test queries, no extras")
    ap.add_argument("--train-limit", type=int, help="tune on this many train queries")
    ap.add_argument("--test-limit", type=int, help="report on this many test queries")
    ap.add_argument("--no-chunking", action="store_true",
                    help="skip the fixed-vs-structure chunking comparison (a second ingestion)")
    ap.add_argument("--no-msmarco", action="store_true", help="skip the MS MARCO smoke test")
    ap.add_argument("--out", type=Path, help="markdown file (default "
                    "bench/results/rag-eval-<date>.md)")
    args = ap.parse_args(argv)
    if args.quick:
        args.train_limit = args.train_limit or 100
        args.test_limit = args.test_limit or 50
        args.no_chunking = args.no_msmarco = True
    return args


def test_rows(results: Sequence[GridResult], chosen: GridResult) -> list[tuple[str, Config]]:
    base = [r for r in results if r.cfg.rerank_depth == 0]
    best_rrf = best(base, lambda c: c.fusion == "rrf").cfg
    best_weighted = best(base, lambda c: c.fusion == "weighted").cfg
    best_plain = best(base, lambda c: True).cfg
    best_rerank = best(results, lambda c: c.rerank_depth > 0).cfg
    rows = [("BM25 alone", Config(mode="bm25", candidates=DEPTH)),
            ("dense alone (MiniLM-L6)", Config(mode="dense", candidates=DEPTH)),
            ("hybrid RRF k=60 (common default)", RRF60),
            ("hybrid RRF, tuned", best_rrf),
            ("hybrid weighted, w=0.5 (untuned)", Config(fusion="weighted")),
            ("hybrid weighted, tuned", best_weighted),
            ("hybrid, tuned", best_plain),
            ("**shipped defaults**", SHIPPED),
            ("RRF k=60 + MaxSim@30", replace(RRF60, rerank_depth=30)),
            ("shipped defaults + MaxSim@30", replace(SHIPPED, rerank_depth=30)),
            ("tuned fusion + MaxSim (tuned depth)", best_rerank)]
    return unique(rows)


async def scifact_section(args: argparse.Namespace, embedder: Embedder,
                          tokens: TokenCounter) -> tuple[list[str], Config | None]:
    data = load_beir("scifact", DATA_ROOT / "beir_scifact")
    col = open_collection(data, ChunkingSettings(), embedder, tokens)
    log(f"SciFact data dir {col.folder}")
    ingest(col)
    train = subset(data.qrels["train"], args.train_limit)
    test = subset(data.qrels["test"], args.test_limit)
    train_q = {q: data.queries[q] for q in train}
    test_q = {q: data.queries[q] for q in test}
    cands = candidate_lists(col, {**train_q, **test_q})
    generation = col.service.index_for(col.id).generation  # chunk ids are per database
    maxsim = MaxSimCache(embedder, col.texts, col.folder / f"maxsim-tokens-g{generation}.npz")
    disagreement = await maxsim_agreement(col, maxsim, cands, train_q)

    t0 = time.perf_counter()
    configs = grid(args.quick)
    train_scorer = Scorer(train)
    results = tune(col, {q: cands[q] for q in train}, train_q, train_scorer, configs, maxsim)
    chosen = best(results, lambda c: True)
    tune_s = time.perf_counter() - t0
    metric_check = train_scorer.check(replay(col, {q: cands[q] for q in train}, train_q,
                                             SHIPPED, None))

    test_scorer = Scorer(test)
    test_cands = {q: cands[q] for q in test}
    rows = await evaluate_rows(col, test_rows(results, chosen), test_q, test_scorer,
                               test_cands, maxsim)
    extra = maxsim_input_section(
        col, cands, {"train": (train_q, train_scorer), "test": (test_q, test_scorer)},
        replace(chosen.cfg, rerank_depth=0), maxsim,
        sorted({c.rerank_depth for c in configs}))
    ing = col.ingest
    filled = ing.get("first", ing)
    when = f"cached, ingested on {filled['date']}: " if "first" in ing else ""
    sections = [
        f"## SciFact corpus: {ing['documents']} documents -> {ing['chunks']} chunks "
        f"({when}{filled['ingested now']:.0f} docs in {filled['ingest_s']:.0f} s, "
        f"{filled['embed_s']:.0f} s of it embedding; index built or loaded in "
        f"{filled['index_s']:.1f} s)",
        *grid_sections(results, len(train), next(r for r in results if r.cfg == chosen.cfg)),
        f"(tuning took {tune_s:.0f} s; pytrec_eval vs the plain metric code, largest per-query "
        f"difference {metric_check:.2g}; cached vs live MaxSim scores, largest difference "
        f"{disagreement:.3g})",
        f"## TEST ({len(test)} queries), every row through RagService.search",
        "`replayed` = the same config over the cached candidate lists and cached MaxSim "
        "vectors (what tuning saw); the shipped path should match it (exactly without "
        "re-ranking, up to ties; within noise with MaxSim, whose live int8 batches differ).",
        rows_table(rows),
        "Published reference points (nDCG@10, SciFact test): "
        + "; ".join(f"{n} {v:.3f}" for n, v in REFERENCES)
        + ". Plain-Python BM25 from the data README (title+text, k1=0.9 b=0.4): nDCG@10 "
        "0.660, Recall@100 0.886.",
        *extra,
    ]
    if not args.no_chunking:
        sections += await chunking_section(data, test_q, test_scorer, chosen.cfg, rows,
                                           embedder, tokens)
    return sections, chosen.cfg


async def chunking_section(data: Dataset, test_q: dict[str, str], scorer: Scorer,
                           chosen: Config, structure_rows: Sequence[Row], embedder: Embedder,
                           tokens: TokenCounter) -> list[str]:
    """The same rows with the "fixed" sliding-window strategy (no re-ranking)."""
    col = open_collection(data, ChunkingSettings(strategy="fixed"), embedder, tokens)
    log(f"SciFact (fixed chunking) data dir {col.folder}")
    ingest(col)
    plain = replace(chosen, rerank_depth=0)
    picks = [("BM25 alone", Config(mode="bm25", candidates=DEPTH)),
             ("dense alone (MiniLM-L6)", Config(mode="dense", candidates=DEPTH)),
             ("hybrid RRF k=60", RRF60),
             ("hybrid, chosen fusion", plain),
             ("shipped defaults", SHIPPED)]
    picks = unique(picks)
    fixed = await evaluate_rows(col, picks, test_q, scorer, None, None)
    structure = {r.cfg: r for r in structure_rows}
    body = []
    for (name, cfg), f in zip(picks, fixed, strict=True):
        s = structure.get(cfg)
        body.append([name, cfg.label(), s.ndcg if s else None, f.ndcg,
                     s.recall if s else None, f.recall])
    return [f"## Chunking: structure vs fixed (TEST, {len(test_q)} queries; fixed: "
            f"{col.ingest['chunks']} chunks)",
            table(["pipeline", "settings", "structure nDCG@10", "fixed nDCG@10",
                   "structure R@100", "fixed R@100"], body)]


async def msmarco_section(chosen: Config | None, embedder: Embedder,
                          tokens: TokenCounter) -> list[str]:
    data = load_beir("msmarco_dl19_mini", DATA_ROOT / "msmarco_trecdl19_mini")
    col = open_collection(data, ChunkingSettings(), embedder, tokens)
    log(f"MS MARCO data dir {col.folder}")
    ingest(col)
    qrels = data.qrels["test"]
    queries = {q: data.queries[q] for q in qrels}
    plain = replace(chosen or SHIPPED, rerank_depth=0)
    depth = (chosen.rerank_depth if chosen and chosen.rerank_depth else 30)
    picks = unique([("BM25 alone", Config(mode="bm25", candidates=DEPTH)),
                    ("dense alone (MiniLM-L6)", Config(mode="dense", candidates=DEPTH)),
                    ("hybrid RRF k=60", RRF60),
                    ("hybrid RRF k=10", Config(rrf_k=10.0)),
                    ("hybrid weighted, w=0.5", Config(fusion="weighted")),
                    ("hybrid, SciFact-tuned fusion", plain),
                    ("shipped defaults", SHIPPED),
                    ("RRF k=60 + MaxSim", replace(RRF60, rerank_depth=depth)),
                    ("SciFact-tuned fusion + MaxSim", replace(plain, rerank_depth=depth))])
    rows = await evaluate_rows(col, picks, queries, Scorer(qrels), None, None)
    return [f"## MS MARCO / TREC DL19 mini (smoke test, graded 1-3; {len(qrels)} judged "
            f"queries, {col.ingest['chunks']} chunks; biased pool: not comparable to "
            "published DL19 numbers)",
            table(["pipeline", "settings", "nDCG@10", "p50 ms"],
                  [[r.name, r.cfg.label(), r.ndcg, f"{r.p50_ms:.0f}"] for r in rows])]


async def amain(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    load0 = os.getloadavg()[0]
    embedder = Embedder(max_length=RagSettings().embed_max_tokens)
    embedder.warm_up()
    tokens = TokenCounter()
    sections = [environment(args, embedder)]
    scifact, chosen = await scifact_section(args, embedder, tokens)
    sections += scifact
    if not args.no_msmarco:
        sections += await msmarco_section(chosen, embedder, tokens)
    sections.append(f"_run took {time.perf_counter() - started:.0f} s; machine load average "
                    f"(1 min, 2 CPUs, other engineers' jobs included) {load0:.1f} at the start, "
                    f"{os.getloadavg()[0]:.1f} at the end_")
    return "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    text = asyncio.run(amain(args))
    print(text)
    out = args.out or REPO / "bench" / "results" / (
        f"rag-eval-{dt.datetime.now():%Y-%m-%d-%H%M}{'-quick' if args.quick else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
