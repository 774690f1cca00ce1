#!/usr/bin/env python3
"""Scale of Seawall's RAG: ingestion throughput, index build and load time,
size on disk, memory and query latency, at SciFact scale (5,183 abstracts,
real embeddings) and at 100k+ chunks (synthetic growth, real code paths).

What is measured, and how:

1. SciFact, real: every abstract through ``load_text`` and the service's
   ``Ingestor.ingest_many``, 32 documents a call as ``seawall ingest`` batches
   them (chunk, embed the batch's chunks together in length-sorted batches, one
   SQLite transaction per document) into a fresh data dir:
   documents/s, chunks/s and the embedder's share (``IngestResult.embed_s``
   over ``total_s``). Then the index: store snapshot, BM25 build (bm25s),
   save; rag.db and the index folder's size; the RSS of a fresh process that
   loads the saved index (a child process, so this one's history does not count).
2. 100k+ chunks, SYNTHETIC: the SciFact documents replicated (copy 0 is the
   original; copy k has " [copy k]" appended to its title and each chunk's
   sentences shuffled, so BM25 sees the same vocabulary in other orders). Copies
   reuse the real vectors of their base chunks plus Gaussian noise (sigma 0.02
   per dimension, about 0.93 cosine to the original), renormalised, written
   straight through ``RagStore.replace_document``: no embedding, which would
   take about an hour on 2 cores. Index build (exact: BM25 only; HNSW above
   ``ann_above``: BM25 + a voyager graph), load, disk and RSS.
3. Query latency (p50/p99 ms, ``RagService.search`` with top_k=10, one query
   at a time, SciFact test queries) for bm25, dense, hybrid (shipped fusion) and
   hybrid + MaxSim re-rank (depth 30) at SciFact scale, and at 100k+ chunks on
   both sides of ``ann_above`` (default 50,000: exact dense search below, HNSW
   above): exact (ann_above raised past the collection) and HNSW (default). The
   HNSW side also reports its dense top-10 recall against exact search. The
   synthetic copies' noisy vectors make the dense top-k of the large collection
   artificially crowded with near-duplicates: latency is what it measures.

Usage (from the repo root; ~13 min on 2 shared cores, half of it embedding SciFact)::

    .venv/bin/python bench/rag_scale.py
    .venv/bin/python bench/rag_scale.py --quick   # 500 docs, 10k chunks, 30 queries

Run nothing heavy beside it: the machine has 2 cores. Data dirs live in
/tmp/seawall-rag-scale (``SEAWALL_RAG_SCALE_DIR``), rebuilt every run.
Results: bench/results/rag-scale-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seawall.config import RagSettings, RerankSettings, RetrievalSettings  # noqa: E402
from seawall.ml.embedder import Embedder  # noqa: E402
from seawall.ml.tokens import TokenCounter  # noqa: E402
from seawall.rag.cli import BATCH_DOCUMENTS  # noqa: E402
from seawall.rag.documents import Chunk  # noqa: E402
from seawall.rag.index import CollectionIndex  # noqa: E402
from seawall.rag.loaders import load_text  # noqa: E402
from seawall.rag.service import RagService, SearchRequest  # noqa: E402
from seawall.rag.store import DocumentInfo  # noqa: E402
from seawall.rag.store import SqliteRagStore as RagStore  # noqa: E402

DATA = Path(os.environ.get("SEAWALL_EVAL_DATA_ROOT", "/work/shared/data")) / "beir_scifact"
WORK = Path(os.environ.get("SEAWALL_RAG_SCALE_DIR", "/tmp/seawall-rag-scale"))
TENANT = "bench"
NAME = "scifact"
NOISE = 0.02
RERANK_DEPTH = 30
NO_GRAPH = 10**9  # an ann_above no collection reaches: exact dense search


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """This process's resident set now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def db_mb(db: Path) -> float:
    """rag.db with its WAL and shared-memory files."""
    return sum(size_mb(p) for p in (db, db.with_name(db.name + "-wal"),
                                    db.with_name(db.name + "-shm")) if p.exists())


def service(folder: Path, embedder: Embedder, tokens: TokenCounter,
            ann_above: int = RagSettings().ann_above) -> RagService:
    return RagService(RagSettings(ann_above=ann_above), folder / "rag.db", tokens, embedder)


# ------------------------------------------------------------------ 1. real ingestion


@dataclass
class IngestStats:
    documents: int
    chunks: int
    wall_s: float
    embed_s: float
    total_s: float  # sum of IngestResult.total_s
    load: float  # the machine's 1-minute load average at the end


def load_corpus(limit: int | None) -> list[dict[str, str]]:
    with open(DATA / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows[:limit] if limit else rows


def ingest(svc: RagService, corpus: Sequence[dict[str, str]]) -> tuple[int, IngestStats]:
    info = svc.store.ensure_collection(TENANT, NAME)
    known = svc.store.sources(info.id)
    t0 = time.perf_counter()
    chunks = 0
    embed_s = total_s = 0.0
    for start in range(0, len(corpus), BATCH_DOCUMENTS):
        docs = [load_text(row["text"], source=row["_id"], format="text",
                          title=row.get("title") or None)[0]
                for row in corpus[start:start + BATCH_DOCUMENTS]]
        for r in svc.ingestor.ingest_many(info.id, docs, known):
            chunks += r.chunks
            embed_s += r.embed_s
            total_s += r.total_s
        if (start // BATCH_DOCUMENTS) % 32 == 31:
            log(f"ingested {start + len(docs)}/{len(corpus)} docs, {chunks} chunks, "
                f"{time.perf_counter() - t0:.0f} s")
    return info.id, IngestStats(len(corpus), chunks, time.perf_counter() - t0, embed_s, total_s,
                                os.getloadavg()[0])


@dataclass
class BuildStats:
    chunks: int
    snapshot_s: float
    bm25_s: float
    graph_s: float | None
    save_s: float
    index_mb: float
    db_mb: float


def build_index(store: RagStore, collection_id: int, folder: Path, ann_above: int) -> BuildStats:
    """``CollectionIndex.build`` + ``save`` as ``RagService.index_for`` runs them.
    BM25 alone is built first (ann_above past the collection), then, if the
    collection is over ``ann_above``, the whole index again: the graph's time
    is the difference."""
    t0 = time.perf_counter()
    snap = store.snapshot(collection_id)
    t1 = time.perf_counter()
    index = CollectionIndex.build(snap, NO_GRAPH)
    t2 = time.perf_counter()
    graph_s = None
    if len(snap.ids) > ann_above:
        index = CollectionIndex.build(snap, ann_above)
        graph_s = (time.perf_counter() - t2) - (t2 - t1)
    t3 = time.perf_counter()
    target = folder / "rag" / str(collection_id)
    index.save(target)
    save_s = time.perf_counter() - t3
    return BuildStats(len(snap.ids), t1 - t0, t2 - t1, graph_s, save_s, size_mb(target),
                      db_mb(folder / "rag.db"))


# ------------------------------------------------------------------ 2. synthetic growth


def shuffled(text: str, rng: random.Random) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text)
    rng.shuffle(sentences)
    return " ".join(sentences)


def grow(base: RagStore, base_id: int, target: Path, target_chunks: int) -> tuple[int, int, float]:
    """A collection of >= ``target_chunks`` chunks in a new store: the base
    documents, then copies with noisy copies of their vectors. Returns the
    collection id, its chunk count and the seconds it took."""
    t0 = time.perf_counter()
    snap = base.snapshot(base_id)
    vectors = dict(zip((int(i) for i in snap.ids), snap.vectors, strict=True))
    rows = base.chunk_rows(base_id, [int(i) for i in snap.ids])
    by_doc: dict[int, list[int]] = {}
    for cid in sorted(rows, key=lambda c: (rows[c].document_id, rows[c].ordinal)):
        by_doc.setdefault(rows[cid].document_id, []).append(cid)
    docs = {d.id: d for d in base.documents(base_id, limit=10**7)}
    copies = math.ceil(target_chunks / len(snap.ids))
    store = RagStore(target / "rag.db")
    info = store.ensure_collection(TENANT, NAME)
    rng = random.Random(0)
    noise = np.random.default_rng(0)
    n = 0
    for copy in range(copies):
        for doc_id, cids in by_doc.items():
            d = docs[doc_id]
            chunks = [Chunk(text=rows[c].text if copy == 0 else shuffled(rows[c].text, rng),
                            start=rows[c].start, end=rows[c].end,
                            heading_path=rows[c].heading_path, tokens=rows[c].tokens,
                            ordinal=rows[c].ordinal, page=rows[c].page) for c in cids]
            v = np.stack([vectors[c] for c in cids])
            if copy:
                v = v + noise.normal(0.0, NOISE, v.shape).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
            title = d.title if copy == 0 else f"{d.title} [copy {copy}]"
            info_doc = DocumentInfo(
                id=0, source=d.source if copy == 0 else f"{d.source}#copy{copy}", title=title,
                format=d.format, content_hash=f"synthetic-{copy}-{d.content_hash}",
                metadata=d.metadata, modified=d.modified, ingested_at=time.time(),
                chunk_count=len(chunks), tokens=d.tokens, chars=d.chars)
            store.replace_document(info.id, info_doc, chunks, v.astype(np.float32))
            n += len(chunks)
        log(f"synthetic copy {copy + 1}/{copies}: {n} chunks")
    store.close()
    return info.id, n, time.perf_counter() - t0


# ------------------------------------------------------------------ load probe (child)


def probe_load(folder: Path, ann_above: int) -> dict[str, float]:
    """In a fresh process: load the saved index as a restarted server would."""
    base = rss_mb()
    svc = RagService(RagSettings(ann_above=ann_above), folder / "rag.db", TokenCounter(),
                     Embedder(max_length=RagSettings().embed_max_tokens))
    info = svc.store.collection(TENANT, NAME)
    assert info is not None
    t0 = time.perf_counter()
    index = svc.index_for(info.id)
    load_s = time.perf_counter() - t0
    return {"load_s": load_s, "chunks": len(index), "rss_before_mb": base,
            "rss_after_mb": rss_mb()}


def run_probe(folder: Path, ann_above: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--probe-load", str(folder),
                          "--ann-above", str(ann_above)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ 3. latency


@dataclass
class Latency:
    mode: str
    queries: int
    p50: float
    p99: float
    parts: dict[str, float]  # p50 of each timed step of the service
    dense_top: dict[str, list[int]]
    load: float  # the machine's 1-minute load average when the block ended


def load_queries(n: int) -> list[tuple[str, str]]:
    with open(DATA / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        test = list(dict.fromkeys(line.split("\t")[0] for line in f))
    with open(DATA / "queries.jsonl", encoding="utf-8") as f:
        text = {str(r["_id"]): r["text"] for r in map(json.loads, f)}
    return [(q, text[q]) for q in test[:n]]


MODES = {  # row name -> (SearchRequest.mode, re-rank)
    "bm25": ("bm25", False),
    "dense": ("dense", False),
    "hybrid": ("hybrid", False),
    f"hybrid + MaxSim@{RERANK_DEPTH}": ("hybrid", True),
}


async def latency(svc: RagService, queries: Sequence[tuple[str, str]], name: str,
                  maxsim_queries: int) -> Latency:
    mode, rerank = MODES[name]
    spec = RerankSettings(kind="maxsim", depth=RERANK_DEPTH) if rerank else RerankSettings()
    svc.settings = svc.settings.model_copy(update={"retrieval": RetrievalSettings(rerank=spec)})
    qs = queries[:maxsim_queries] if rerank else queries
    for _, text in qs[:3]:  # warm up: models, index, caches
        await svc.search(TENANT, NAME, SearchRequest(text, top_k=10, mode=mode, rerank=rerank))
    wall: list[float] = []
    parts: dict[str, list[float]] = {}
    top: dict[str, list[int]] = {}
    for qid, text in qs:
        t0 = time.perf_counter()
        res = await svc.search(TENANT, NAME, SearchRequest(text, top_k=10, mode=mode,
                                                           rerank=rerank))
        wall.append((time.perf_counter() - t0) * 1000)
        for k, v in res.timings_ms.items():
            parts.setdefault(k, []).append(v)
        if mode == "dense":
            top[qid] = [h.chunk.id for h in res.hits]
    return Latency(name, len(qs), float(np.percentile(wall, 50)), float(np.percentile(wall, 99)),
                   {k: float(np.percentile(v, 50)) for k, v in parts.items()}, top,
                   os.getloadavg()[0])


async def latencies(svc: RagService, queries: Sequence[tuple[str, str]], label: str,
                    maxsim_queries: int) -> list[Latency]:
    out = []
    for name in MODES:
        r = await latency(svc, queries, name, maxsim_queries)
        log(f"{label} {name}: p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms ({r.queries} queries)")
        out.append(r)
    return out


def lookup_ms(store: RagStore, n: int = 50) -> tuple[float, float]:
    """Median ms of ``RagStore.collection_id`` (what a search resolves the name
    with) and of ``RagStore.collection`` (the listing's, which counts the
    collection's documents and chunks; searches called it before a8c0a4e)."""
    out = []
    for lookup in (store.collection_id, store.collection):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            lookup(TENANT, NAME)
            times.append((time.perf_counter() - t0) * 1000)
        out.append(float(np.median(times)))
    return out[0], out[1]


def shipped_retrieval() -> str:
    r = RetrievalSettings()
    fusion = f"RRF k={r.rrf_k:g}" if r.fusion == "rrf" else "weighted-score fusion"
    return f"{fusion}, dense_weight {r.dense_weight:g}, {r.candidates} candidates"


def recall_at_10(approx: dict[str, list[int]], exact: dict[str, list[int]]) -> float:
    return float(np.mean([len(set(approx[q]) & set(exact[q])) / max(len(exact[q]), 1)
                          for q in exact]))


# ------------------------------------------------------------------ markdown


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if v is None:
            return "-"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> str:
    import bm25s
    import onnxruntime
    import voyager

    cpu = platform.processor() or platform.machine()
    return "\n".join([
        "# RAG scale: ingestion, indexes, disk, memory, query latency", "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        "shared with other work (latencies are indicative)",
        f"- versions: python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, bm25s {bm25s.__version__}, voyager "
        f"{getattr(voyager, '__version__', '?')}",
        "- RagSettings defaults: structure chunking 256/32 tokens, embedder all-MiniLM-L6-v2 "
        f"int8 (max_length {RagSettings().embed_max_tokens}), embed_batch "
        f"{RagSettings().embed_batch}, ann_above {RagSettings().ann_above}",
        f"- command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}",
        "- load average = the machine's, other engineers' jobs included: above ~2 the "
        "timings are inflated by contention for the 2 cores",
    ])


def latency_table(runs: dict[str, list[Latency]]) -> str:
    rows = []
    for label, lats in runs.items():
        for r in lats:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r.parts.items())
            rows.append([label, r.mode, r.queries, r.p50, r.p99, parts, r.load])
    return table(["collection", "search", "queries", "p50 ms", "p99 ms",
                  "p50 of the service's steps (ms)", "load avg (1 min, 2 CPUs)"], rows)


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 docs, 10k chunks, 30 queries")
    ap.add_argument("--docs", type=int, help="first N SciFact documents (default all)")
    ap.add_argument("--target-chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="SciFact test queries timed")
    ap.add_argument("--maxsim-queries", type=int, default=100,
                    help="queries timed with MaxSim re-ranking (~1 s each)")
    ap.add_argument("--out", type=Path, help="markdown file (default "
                    "bench/results/rag-scale-<date>.md)")
    ap.add_argument("--probe-load", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--ann-above", type=int, default=RagSettings().ann_above,
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.docs = args.docs or 500
        args.target_chunks = 10_000
        args.queries = args.maxsim_queries = 30
    return args


async def amain(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    small, large = WORK / "scifact", WORK / "large"
    embedder = Embedder(max_length=RagSettings().embed_max_tokens)
    embedder.warm_up()
    tokens = TokenCounter()
    queries = load_queries(args.queries)
    runs: dict[str, list[Latency]] = {}
    lookups: dict[str, tuple[float, float]] = {}

    # 1. SciFact, real embeddings: ingest, build, load, latency.
    svc = service(small, embedder, tokens)
    cid, ing = ingest(svc, load_corpus(args.docs))
    builds = [("SciFact, real vectors (exact dense)", build_index(svc.store, cid, small, NO_GRAPH),
               run_probe(small, svc.settings.ann_above))]
    n_small = builds[0][1].chunks
    runs[f"SciFact ({n_small} chunks), exact"] = await latencies(
        svc, queries, "SciFact", args.maxsim_queries)
    lookups[f"SciFact: {ing.documents} documents"] = lookup_ms(svc.store)

    # 2. 100k+ chunks, synthetic vectors, on each side of ann_above.
    lid, n_large, grow_s = grow(svc.store, cid, large, args.target_chunks)
    svc.close()
    log(f"synthetic collection: {n_large} chunks in {grow_s:.0f} s")
    default = RagSettings().ann_above
    sides = (("exact (ann_above raised)", NO_GRAPH),
             (f"HNSW (ann_above {default:,})" if n_large > default
              else f"default (ann_above {default:,}: still exact)", default))
    for side, ann_above in sides:
        store = RagStore(large / "rag.db")
        b = build_index(store, lid, large, ann_above)
        store.close()
        builds.append((f"synthetic, {side}", b, run_probe(large, ann_above)))
        big = service(large, embedder, tokens, ann_above)
        runs[f"synthetic {n_large}, {side.split()[0]}"] = await latencies(
            big, queries, f"synthetic {side.split()[0]}", args.maxsim_queries)
        info = big.store.collection(TENANT, NAME)
        assert info is not None
        lookups[f"synthetic: {info.documents} documents"] = lookup_ms(big.store)
        big.close()

    sections = [environment(args),
                f"## 1. Ingestion at SciFact scale (real embeddings; {ing.documents} documents)",
                table(["documents", "chunks", "wall s", "docs/s", "chunks/s", "embedding s",
                       "embedding share", "chunk + store s", "load avg at the end"],
                      [[ing.documents, ing.chunks, ing.wall_s, ing.documents / ing.wall_s,
                        ing.chunks / ing.wall_s, ing.embed_s,
                        f"{ing.embed_s / ing.total_s:.0%}", ing.total_s - ing.embed_s,
                        ing.load]]),
                "`embedding share` = sum of IngestResult.embed_s / sum of total_s; the rest "
                "is chunking (o200k token counts), hashing and the SQLite transactions. "
                f"Ingestor.ingest_many over {BATCH_DOCUMENTS} documents a call (embed_batch "
                f"{RagSettings().embed_batch}), as `seawall ingest` does."]
    rows = [[label, b.chunks, b.snapshot_s, b.bm25_s, b.graph_s, b.save_s, p["load_s"],
             b.db_mb, b.index_mb, p["rss_after_mb"], p["rss_after_mb"] - p["rss_before_mb"]]
            for label, b, p in builds]
    copies = math.ceil(args.target_chunks / n_small)
    sections += [
        f"## 2. Indexes: build, load, disk, memory (synthetic: {n_large} chunks = the SciFact "
        f"chunks x {copies}, the copies written with noisy copies of the real vectors through "
        f"RagStore.replace_document in {grow_s:.0f} s: SYNTHETIC VECTORS, no embedding)",
        table(["collection", "chunks", "snapshot s", "BM25 build s", "HNSW build s", "save s",
               "load s (fresh process)", "rag.db MB", "index dir MB", "RSS after load MB",
               "RSS added by the index MB"], rows),
        "Build = store snapshot (rows -> texts + float32 vectors) + bm25s index (+ the voyager "
        "graph above ann_above), as RagService.index_for runs it; load = a fresh process's "
        "RagService.index_for finding the saved index (snapshot read + bm25s/voyager load). "
        "The exact vectors are held in RAM as float32 (n x 384 x 4 bytes) either way.",
    ]
    ex, hn = (next(r for r in runs[f"synthetic {n_large}, {side.split()[0]}"]
                   if r.mode == "dense") for side, _ in sides)
    sections += [
        f"## 3. Query latency (RagService.search, top_k=10, {len(queries)} SciFact test "
        "queries one at a time; MaxSim rows over the first "
        f"{min(args.maxsim_queries, len(queries))}; re-rank depth {RERANK_DEPTH}; shipped "
        f"retrieval settings: {shipped_retrieval()}; the large collection's numbers use "
        "SYNTHETIC vectors)",
        latency_table(runs),
        f"HNSW dense top-10 recall against exact search on the synthetic collection: "
        f"{recall_at_10(hn.dense_top, ex.dense_top):.3f} (the noisy copies make many "
        "near-ties, so this is a pessimistic figure). Steps (`SearchResult.timings_ms`): "
        "index = generation check, embed = the query's vector, rerank = MaxSim over the top "
        "30 (one MiniLM pass over their tokens), total = from the candidates to the end. The "
        "wall time also holds what `total` leaves out: resolving the collection's name, the "
        "worker-thread hops. Name lookups (median ms):",
        table(["collection", "RagStore.collection_id (search)",
               "RagStore.collection (with counts; search used it before a8c0a4e)"],
              [[k, *v] for k, v in lookups.items()]),
        f"_run took {time.perf_counter() - started:.0f} s; peak RSS of this process "
        f"{peak_rss_mb():.0f} MB_",
    ]
    return "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe_load is not None:
        print(json.dumps(probe_load(args.probe_load, args.ann_above)))
        return
    text = asyncio.run(amain(args))
    print(text)
    out = args.out or REPO / "bench" / "results" / (
        f"rag-scale-{dt.datetime.now():%Y-%m-%d-%H%M}{'-quick' if args.quick else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
