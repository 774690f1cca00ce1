#!/usr/bin/env python3
"""The semantic cache at scale: lookup latency, accuracy, memory and open time
of the embedded store (``SqliteCacheStore``) with 10k, 100k and 1M entries in
ONE scope (the realistic worst case: an FAQ-like stream of first questions).

What is measured, per size:

* latency (p50/p99, one call at a time) of ``store.nearest`` — the whole store
  call: the graph search for 2k candidates plus the SQLite read and exact
  re-scoring of their rows — at the default threshold
  (``cache.semantic.threshold``, k=5; a query with no candidate near it reads
  no row) and with threshold 0 (every query reads its 10 candidate rows: the
  worst case); of the bare ``ScopedVectors.search`` (k=10); of exact
  ``store.get`` (stored key, and unknown key); and, for reference, an exact
  NumPy scan over all vectors (what the store would cost without a graph);
* accuracy: recall@1 of the graph (as the store builds it: storage type, M,
  ef and query ef are read from ``seawall.cache.vectors``) and of ``nearest``
  (after re-scoring) against exact brute force over the stored float16
  vectors, and of hits: of the queries whose exact best match is >= the
  threshold, how many ``nearest`` answers with a hit; the graph's cosine error;
  and what the graph's recall would be with query_ef 50 / 100 (bench-only);
* writes: ``put`` of new entries into the big scope (row insert + commit +
  graph add), p50/p99;
* memory: growth of the process RSS over ``open()`` (raw, and after
  ``malloc_trim``) and its peak during a rebuild; on-disk size of cache.db
  (+WAL) and the index folder;
* open time: rebuilding the graph from the rows (first open of bulk-loaded
  rows), saving it (``close()``), and loading the saved graph (second open);
  for reference, the same graph built with voyager's batch ``add_items``. A
  rebuild running past ``--rebuild-timeout-s`` is stopped (its progress is
  reported) and the batch-built graph is saved in its place, so the load and
  the lookups are still measured.

Data: real question embeddings (all-MiniLM-L6-v2 int8, the gateway's own
embedder) of the unique questions of the QQP duplicate-pairs sample
(/work/shared/data/qqp_gptcache, read in place; embeddings cached under
/tmp). Beyond the ~135k real questions, entries are SYNTHETIC neighbours of
real ones: a real vector + Gaussian noise (sigma drawn per entry, cosine to
its parent ~0.83-0.98), re-normalised — a denser, more clustered scope than
real traffic, which is harder for HNSW. Queries (held out of the store):
real duplicates of stored questions (QQP pairs marked duplicate: the cache's
hit case) and other unseen real questions.

Rows are bulk-loaded into cache.db with executemany in the store's schema;
each phase that is measured runs in a fresh subprocess so that RSS belongs
to the store alone.

Usage (from the repo root; with 1M, ~30-40 min on 2 cores)::

    .venv/bin/python bench/cache_scale.py                        # 10k, 100k, 1M
    .venv/bin/python bench/cache_scale.py --sizes 10000,100000   # quicker
    .venv/bin/python bench/cache_scale.py --help

Results: printed, and written to bench/results/cache-scale-<YYYY-MM-DD-HHMM>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import gzip
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `seawall` importable
    sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data/qqp_gptcache/qqp_pairs.jsonl.gz")
WORK = Path("/tmp/seawall-bench/cache-scale")
RESULTS = ROOT / "bench" / "results"
DIM = 384
SCOPE = hashlib.blake2b(b"bench-faq-scope", digest_size=16).digest()
THRESHOLD = 0.0  # set in main(): the default cache.semantic.threshold
K = 5  # the default semantic.candidates: the index is asked for 2k
WHAT_IF_EF = (50, 100)
SIGMA = (0.01, 0.035)  # per-dimension noise of synthetic neighbours
ANSWER = ("Here is a short answer to the question, as an assistant would give it. " * 7).strip()
F32 = npt.NDArray[np.float32]
F16 = npt.NDArray[np.float16]
I64 = npt.NDArray[np.int64]

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def entry_key(entry_id: int) -> bytes:
    return hashlib.blake2b(f"bench-entry-{entry_id}".encode(), digest_size=16).digest()


# ------------------------------------------------------------------ data


@dataclass(slots=True)
class Questions:
    texts: list[str]  # unique questions
    duplicates: list[tuple[int, int]]  # (i, j) marked duplicate, i != j


def load_questions(path: Path) -> Questions:
    index: dict[str, int] = {}
    texts: list[str] = []
    duplicates = []

    def idx(text: str) -> int:
        text = text.strip()
        if text not in index:
            index[text] = len(texts)
            texts.append(text)
        return index[text]

    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            a, b = idx(row["question1"]), idx(row["question2"])
            if row["is_duplicate"] and a != b:
                duplicates.append((a, b))
    return Questions(texts, duplicates)


def embed_texts(texts: Sequence[str], cache_dir: Path) -> F32:
    """Unit vectors of ``texts``, cached as .npy keyed by their content."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"qqp-minilm-{digest}.npy"
    if path.exists():
        log(f"embeddings from {path}")
        return np.load(path)
    from seawall.ml.embedder import Embedder

    embedder = Embedder()
    embedder.warm_up()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    batch = 64
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        out[chunk] = embedder.embed([texts[i] for i in chunk])
        if start % (batch * 200) == 0:
            log(f"embedding {start:,}/{len(texts):,}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    log(f"embeddings cached at {path}")
    return out


@dataclass(slots=True)
class Split:
    targets: I64  # stored questions that a paraphrase query duplicates
    stored: I64  # every real question that may be stored, targets first
    paraphrases: I64  # held-out queries: duplicates of a target
    novel: I64  # held-out queries: other unseen questions


def make_split(q: Questions, n_para: int, n_novel: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    pairs = [q.duplicates[i] for i in rng.permutation(len(q.duplicates))]
    used: set[int] = set()
    targets, paras = [], []
    for a, b in pairs:
        if len(paras) == n_para:
            break
        if a in used or b in used:
            continue
        used.update((a, b))
        targets.append(a)
        paras.append(b)
    free = np.array([i for i in rng.permutation(len(q.texts)) if i not in used])
    novel = free[:n_novel]
    rest = free[n_novel:]
    stored = np.concatenate([np.array(targets), rest])
    return Split(np.array(targets), stored, np.array(paras), novel)


@dataclass(slots=True)
class Corpus:
    vectors: F16  # as stored (float16), in insertion (= id) order
    source: I64  # the real question each entry is (or is a neighbour of)
    synthetic: npt.NDArray[np.bool_]

    @property
    def n(self) -> int:
        return len(self.source)


def synthetic_neighbours(parents: F32, rng: np.random.Generator) -> F32:
    sigma = rng.uniform(*SIGMA, size=(len(parents), 1)).astype(np.float32)
    noisy = parents + sigma * rng.standard_normal(parents.shape, dtype=np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def make_corpus(split: Split, vecs: F32, size: int, seed: int) -> Corpus:
    """``size`` entries: real questions first (targets always in), synthetic
    neighbours of random real ones beyond them; shuffled into insertion order."""
    rng = np.random.default_rng(seed + size)
    n_real = min(size, len(split.stored))
    source = split.stored[:n_real]
    synthetic = np.zeros(size, dtype=bool)
    vectors = np.zeros((size, DIM), dtype=np.float16)
    vectors[:n_real] = vecs[source]
    if size > n_real:
        parents = rng.choice(source, size=size - n_real)
        for start in range(0, len(parents), 100_000):
            chunk = parents[start:start + 100_000]
            at = n_real + start
            vectors[at:at + len(chunk)] = synthetic_neighbours(vecs[chunk], rng)
        source = np.concatenate([source, parents])
        synthetic[n_real:] = True
    order = rng.permutation(size)
    return Corpus(vectors[order], source[order], synthetic[order])


# ------------------------------------------------------------------ rows


def completion_json(entry_id: int, now: float) -> bytes:
    return orjson.dumps({
        "id": f"chatcmpl-bench{entry_id}", "object": "chat.completion", "created": int(now),
        "model": "faq", "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": ANSWER}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 100, "total_tokens": 120}})


def rows(corpus: Corpus, texts: Sequence[str], start: int, stop: int,
         now: float) -> Iterator[tuple[Any, ...]]:
    for pos in range(start, stop):
        entry_id = pos + 1
        text = texts[corpus.source[pos]]
        yield (entry_id, entry_key(entry_id), SCOPE, "bench", "faq", None, text,
               corpus.vectors[pos].tobytes(), completion_json(entry_id, now), 20, 100, 0.0012,
               now, now + 30 * 86_400, now, 0)


def bulk_load(db_path: Path, corpus: Corpus, texts: Sequence[str]) -> float:
    """Rows straight into the store's table; returns seconds taken."""
    from seawall.cache.sqlite_store import _SCHEMA

    t0 = time.perf_counter()
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(_SCHEMA)
    now = time.time()
    step = 20_000
    for start in range(0, corpus.n, step):
        db.executemany(
            "INSERT INTO cache_entries (id, key, scope, tenant, model, prompt_version, text, "
            "vector, completion, prompt_tokens, completion_tokens, cost_usd, created_at, "
            "expires_at, last_used_at, hits) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows(corpus, texts, start, min(start + step, corpus.n), now))
        db.commit()
        if (start // step) % 10 == 9:
            log(f"  rows {start + step:,}/{corpus.n:,}")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ exact search


def exact_best(vectors: F16, queries: F32, block: int = 32_768) -> tuple[I64, F32]:
    """Brute force over the stored (float16) vectors: best id and cosine per query."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.zeros(len(queries), dtype=np.int64)
    qt = np.ascontiguousarray(queries.T)
    for start in range(0, len(vectors), block):
        sims = vectors[start:start + block].astype(np.float32) @ qt
        top = sims.argmax(axis=0)
        val = sims[top, np.arange(len(queries))]
        better = val > best
        best[better] = val[better]
        arg[better] = top[better] + start
    return arg + 1, best  # ids are positions + 1


def time_exact_scan(vectors: F16, queries: F32, n: int) -> list[float]:
    """Per-query latency of an exact float32 scan (the no-graph reference)."""
    matrix = vectors.astype(np.float32)
    out = []
    for q in queries[:n]:
        t0 = time.perf_counter()
        sims = matrix @ q
        top = np.argpartition(-sims, 2 * K)[: 2 * K]
        _ = top[np.argsort(-sims[top])]
        out.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------ workers


def proc_status(field: str) -> int:
    """A /proc/self/status field in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0  # ms


async def open_measured(store: Any) -> dict[str, float]:
    gc.collect()
    malloc_trim()
    reset_peak_rss()
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    await store.open()
    took = time.perf_counter() - t0
    raw = proc_status("VmRSS")
    peak = proc_status("VmHWM")
    gc.collect()
    malloc_trim()
    trimmed = proc_status("VmRSS")
    return {"open_s": took, "rss_mb": (raw - base) / 1024, "rss_trim_mb": (trimmed - base) / 1024,
            "peak_mb": (peak - base) / 1024}


def proc_counters() -> tuple[int, float, float]:
    """Minor page faults, user and system CPU seconds of this process."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[7]), int(fields[11]) / tick, int(fields[12]) / tick


def watch_index(store: Any, samples: list[tuple[float, ...]], stop: threading.Event,
                progress: Path, every_s: float = 2.0) -> None:
    """Sample (seconds, vectors indexed, RSS KiB, minor faults, user s, system s)
    from a thread while open() runs; also written to ``progress`` so a run
    stopped at the time cap keeps them."""
    t0 = time.perf_counter()
    last_log = 0.0
    while not stop.wait(every_s):
        n = len(store.vectors)
        now = time.perf_counter() - t0
        samples.append((now, n, proc_status("VmRSS"), *proc_counters()))
        progress.write_text(json.dumps(samples))
        if now - last_log >= 60:
            last_log = now
            log(f"  open: {n:,} vectors indexed after {now:.0f}s")


def index_rates(samples: Sequence[Sequence[float]]) -> dict[str, float]:
    """From the rebuild's samples: indexing rate (entries/s) over its first and
    its last minute, minor page faults per entry and system share of CPU time."""
    rows = [x for x in samples if x[1] > 0]
    if len(rows) < 3:
        return {}
    t0, n0, _, f0, u0, s0 = rows[0]
    t1, n1, _, f1, u1, s1 = rows[-1]

    def rate(a: Sequence[float], b: Sequence[float]) -> float:
        return (b[1] - a[1]) / max(b[0] - a[0], 1e-9)

    first = next((x for x in rows if x[0] >= t0 + 60), rows[-1])
    last = next((x for x in reversed(rows) if x[0] <= t1 - 60), rows[0])
    return {"first_min": rate(rows[0], first), "last_min": rate(last, rows[-1]),
            "faults_per_entry": (f1 - f0) / max(n1 - n0, 1),
            "sys_share": (s1 - s0) / max((u1 - u0) + (s1 - s0), 1e-9), "indexed": n1}


async def worker_rebuild(work: Path) -> dict[str, Any]:
    from seawall.cache.sqlite_store import SqliteCacheStore

    store = SqliteCacheStore(work / "cache.db", max_entries=10**8, dim=DIM)
    samples: list[tuple[float, ...]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_index, daemon=True,
                               args=(store, samples, stop, work / "progress.json"))
    watcher.start()
    out = await open_measured(store)
    stop.set()
    watcher.join()
    samples.append((out["open_s"], len(store.vectors), proc_status("VmRSS"), *proc_counters()))
    out["samples"] = samples
    out["vectors"] = len(store.vectors)
    out["graphs"] = store.vectors.graphs
    t0 = time.perf_counter()
    await store.close()
    out["save_s"] = time.perf_counter() - t0
    return out


async def time_nearest(store: Any, queries: F32, min_similarity: float
                       ) -> tuple[list[float], list[list[tuple[int, float]]]]:
    lat, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        answers = await store.nearest(SCOPE, q, K, min_similarity, time.time(), None)
        lat.append(time.perf_counter() - t0)
        found.append([(a.id, a.similarity or 0.0) for a in answers])
    return lat, found


def time_search(store: Any, queries: F32) -> tuple[list[float], list[int], list[float]]:
    """Latency, top id and the graph's own cosine for that id."""
    lat, top, score = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = store.vectors.search(SCOPE, q, 2 * K)
        lat.append(time.perf_counter() - t0)
        top.append(hits[0][0] if hits else -1)
        score.append(hits[0][1] if hits else float("nan"))
    return lat, top, score


def time_graph_ef(store: Any, queries: F32, ef: int) -> tuple[list[float], list[int]]:
    """The graph searched deeper than the store does (bench-only what-if)."""
    index = store.vectors._parts[SCOPE].index
    lat, top = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, _ = index.query(q, k=2 * K, query_ef=ef)
        lat.append(time.perf_counter() - t0)
        top.append(int(ids[0]))
    return lat, top


async def time_get(store: Any, keys: list[bytes]) -> list[float]:
    lat = []
    for key in keys:
        t0 = time.perf_counter()
        await store.get(key, time.time(), None)
        lat.append(time.perf_counter() - t0)
    return lat


def agreement(top: Sequence[int], truth_id: I64, truth_sim: F32, vectors: F16,
              queries: F32) -> npt.NDArray[np.bool_]:
    """Per query: the returned id is the exact best (or ties with it)."""
    ok = np.zeros(len(top), dtype=bool)
    for i, got in enumerate(top):
        if got == truth_id[i]:
            ok[i] = True
        elif got > 0:
            sim = float(vectors[got - 1].astype(np.float32) @ queries[i])
            ok[i] = sim >= truth_sim[i] - 1e-6
    return ok


async def worker_load(work: Path) -> dict[str, Any]:
    from seawall.cache.sqlite_store import SqliteCacheStore

    meta = json.loads((work / "meta.json").read_text())
    queries = np.load(work / "queries.npy")
    store = SqliteCacheStore(work / "cache.db", max_entries=10**8, dim=DIM)
    out: dict[str, Any] = await open_measured(store)
    out["vectors"] = len(store.vectors)
    out["graphs"] = store.vectors.graphs
    warm = queries[: min(200, len(queries))]
    await time_nearest(store, warm, THRESHOLD)
    search_lat, search_top, search_score = time_search(store, queries)
    near_lat, near_found = await time_nearest(store, queries, THRESHOLD)
    all_lat, all_found = await time_nearest(store, queries, 0.0)
    rng = np.random.default_rng(7)
    ids = rng.integers(1, meta["n"] + 1, size=meta["n_get"])
    hit_lat = await time_get(store, [entry_key(int(i)) for i in ids])
    miss_lat = await time_get(store, [entry_key(-int(i)) for i in ids])
    out["lat"] = {"search": search_lat, "nearest": near_lat, "nearest_all": all_lat,
                  "get_hit": hit_lat, "get_miss": miss_lat}
    out["top"] = {"search": search_top,
                  "nearest_all": [f[0][0] if f else -1 for f in all_found]}
    out["hit"] = [bool(f) for f in near_found]
    out["graph_score"] = search_score
    out["rescored_best"] = [f[0][1] if f else float("nan") for f in all_found]
    for ef in WHAT_IF_EF:
        lat, top = time_graph_ef(store, queries, ef)
        out["lat"][f"ef{ef}"] = lat
        out["top"][f"ef{ef}"] = top
    out["lat"]["put"] = await time_put(store, queries[-meta["n_put"]:], meta["n"])
    await store.close()
    return out


async def time_put(store: Any, vectors: F32, n: int) -> list[float]:
    """``put`` of new entries into the big scope: row insert + commit + graph add."""
    from seawall.cache.store import NewEntry

    completion = orjson.loads(completion_json(0, time.time()))
    lat = []
    for i, v in enumerate(vectors):
        entry = NewEntry(key=entry_key(n + 1 + i), scope=SCOPE, tenant="bench", model="faq",
                         prompt_version=None, text=f"new question {i}", vector=v,
                         completion=completion, prompt_tokens=20, completion_tokens=100,
                         cost_usd=0.0012, ttl_s=86_400)
        t0 = time.perf_counter()
        await store.put(entry)
        lat.append(time.perf_counter() - t0)
    return lat


def run_worker(mode: str, work: Path, timeout_s: float | None = None) -> dict[str, Any] | None:
    """Run one measured phase in a fresh interpreter, which writes its result
    as JSON into ``work``. None if it ran past ``timeout_s`` (it is killed)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode,
           "--workdir", str(work)]
    out = work / f"result-{mode}.json"
    out.unlink(missing_ok=True)
    try:
        subprocess.run(cmd, check=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def batch_build(corpus: Corpus, save_to: Path | None) -> float:
    """Reference: the same graph built with voyager's batch ``add_items``
    (all cores, one resize per batch) instead of one ``add_item`` per row.
    With ``save_to``, saved in the store's format (manifest, watermark = the
    last id) so that the next ``open()`` loads it."""
    from seawall.cache.vectors import ScopedVectors, _Graph, new_graph

    t0 = time.perf_counter()
    index = new_graph(DIM)
    step = 100_000
    for start in range(0, corpus.n, step):
        chunk = corpus.vectors[start:start + step].astype(np.float32)
        index.add_items(chunk, list(range(start + 1, start + 1 + len(chunk))))
        if corpus.n > step:
            log(f"  batch build: {start + len(chunk):,}/{corpus.n:,}")
    took = time.perf_counter() - t0
    if save_to is not None:
        vectors = ScopedVectors(DIM)
        vectors._parts[SCOPE] = _Graph(index)
        vectors.save(save_to, corpus.n)
    return took


def rebuild_timed_out(work: Path, cap_s: float) -> dict[str, Any]:
    samples = json.loads((work / "progress.json").read_text()) if (
        work / "progress.json").exists() else []
    base_rss = samples[0][2] if samples else 0
    last = samples[-1] if samples else [cap_s, 0, 0]
    return {"timed_out": True, "open_s": cap_s, "samples": samples, "indexed": last[1],
            "rss_mb": (last[2] - base_rss) / 1024, "rss_trim_mb": float("nan"),
            "peak_mb": float("nan"), "save_s": float("nan")}


def worker_main(mode: str, work: Path) -> None:
    import uvloop  # the gateway's loop

    fn = worker_rebuild if mode == "rebuild" else worker_load
    result = uvloop.run(fn(work))
    (work / f"result-{mode}.json").write_text(json.dumps(result))


# ------------------------------------------------------------------ one size


def disk_mb(work: Path) -> tuple[float, float]:
    db = sum(p.stat().st_size for p in work.glob("cache.db*"))
    index = sum(p.stat().st_size for p in (work / "cache.index").glob("*"))
    return db / 2**20, index / 2**20


def measure_size(size: int, split: Split, vecs: F32, queries: F32, groups: dict[str, Any],
                 texts: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    work = WORK / f"n{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"== {size:,} entries: building vectors")
    corpus = make_corpus(split, vecs, size, args.seed)
    log(f"bulk-loading {corpus.n:,} rows ({int(corpus.synthetic.sum()):,} synthetic)")
    load_s = bulk_load(work / "cache.db", corpus, texts)
    log(f"rows loaded in {load_s:.1f}s; exact ground truth for {len(queries):,} queries")
    truth_id, truth_sim = exact_best(corpus.vectors, queries)
    scan = time_exact_scan(corpus.vectors, queries, args.scan_queries)
    np.save(work / "queries.npy", queries)
    (work / "meta.json").write_text(json.dumps({"n": size, "n_get": args.get_queries,
                                                "n_put": args.puts}))
    log("open #1: rebuilding the graph from the rows (subprocess)")
    rebuild = run_worker("rebuild", work, args.rebuild_timeout_s)
    if rebuild is None:
        rebuild = rebuild_timed_out(work, args.rebuild_timeout_s)
        log(f"rebuild stopped at the {args.rebuild_timeout_s:.0f}s cap with "
            f"{rebuild['indexed']:,} of {size:,} indexed; batch-building the graph instead")
        batch_s = batch_build(corpus, work / "cache.index")
    else:
        log(f"rebuilt in {rebuild['open_s']:.1f}s, saved in {rebuild['save_s']:.1f}s; "
            f"batch build for reference")
        batch_s = batch_build(corpus, None)
    log(f"batch build: {batch_s:.1f}s")
    db_mb, index_mb = disk_mb(work)
    log("open #2: loading the saved graph, then lookups (subprocess)")
    loaded = run_worker("load", work)
    log(f"loaded in {loaded['open_s']:.1f}s")
    acc = accuracy(loaded, truth_id, truth_sim, corpus.vectors, queries, groups)
    if not args.keep:
        shutil.rmtree(work)
    return {"size": size, "synthetic": int(corpus.synthetic.sum()), "bulk_s": load_s,
            "rebuild": rebuild, "batch_s": batch_s, "load": loaded, "db_mb": db_mb,
            "index_mb": index_mb, "scan": scan, "acc": acc}


def accuracy(loaded: dict[str, Any], truth_id: I64, truth_sim: F32, vectors: F16,
             queries: F32, groups: dict[str, Any]) -> dict[str, Any]:
    para = np.zeros(len(queries), dtype=bool)
    para[: groups["paraphrases"]] = True
    out: dict[str, Any] = {}
    for name, top in loaded["top"].items():
        ok = agreement(top, truth_id, truth_sim, vectors, queries)
        out[name] = {"all": ok.mean(), "para": ok[para].mean(), "novel": ok[~para].mean()}
    exact_hit = truth_sim >= THRESHOLD
    found = np.array(loaded["hit"])
    unfiltered = np.array(loaded["rescored_best"]) >= THRESHOLD
    out["exact_hits"] = int(exact_hit.sum())
    out["para_exact_hits"] = int((exact_hit & para).sum())
    out["hit_recall"] = float(found[exact_hit].mean()) if exact_hit.any() else float("nan")
    out["hit_recall_unfiltered"] = (float(unfiltered[exact_hit].mean()) if exact_hit.any()
                                    else float("nan"))
    out["bias"] = graph_score_bias(loaded, vectors, queries, exact_hit)
    return out


def graph_score_bias(loaded: dict[str, Any], vectors: F16, queries: F32,
                     exact_hit: npt.NDArray[np.bool_]) -> dict[str, float]:
    """The graph's cosine for its top-1 minus the exact cosine of that entry:
    mean and 5th percentile, over queries with an exact match >= THRESHOLD."""
    diffs = []
    for i in np.flatnonzero(exact_hit):
        got = loaded["top"]["search"][i]
        if got > 0:
            exact = float(vectors[got - 1].astype(np.float32) @ queries[i])
            diffs.append(loaded["graph_score"][i] - exact)
    if not diffs:
        return {"mean": float("nan"), "p5": float("nan")}
    return {"mean": float(np.mean(diffs)), "p5": float(np.percentile(diffs, 5))}


# ------------------------------------------------------------------ report


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def git_revision() -> str:
    """HEAD, and whether seawall/ had uncommitted changes (read-only git)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""

    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "seawall")
    return head + (" + uncommitted changes in seawall/" if dirty else "")


def graph_params() -> str:
    """The graph as the store builds it now."""
    from seawall.cache.vectors import new_graph

    index = new_graph(DIM)
    storage = str(index.storage_data_type).rsplit(".", 1)[-1]
    return (f"{storage} storage, M={index.M}, ef_construction={index.ef_construction}, "
            f"query ef={index.ef}")


def machine_facts() -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = git_revision()
    return [
        f"- Machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"{mem_kb / 2**20:.0f} GiB RAM (shared machine: other jobs may have run)",
        f"- Python {platform.python_version()}; numpy {np.__version__}; voyager "
        f"{version('voyager')}; aiosqlite {version('aiosqlite')}; SQLite "
        f"{sqlite3.sqlite_version}; onnxruntime {version('onnxruntime')}; seawall {commit}",
    ]


def ms(values: Sequence[float]) -> str:
    return f"{pct(values, 50):.3f} / {pct(values, 99):.3f}"


def latency_table(results: list[dict[str, Any]]) -> list[str]:
    out = [f"| entries | `nearest` @{THRESHOLD} p50 / p99 | `nearest` @0 (10 rows read) p50 / p99 "
           "| bare `search` p50 / p99 | `get` stored key p50 / p99 | `get` unknown key p50 "
           "| `put` new entry p50 / p99 | exact NumPy scan p50 (reference) |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lat = r["load"]["lat"]
        out.append(f"| {r['size']:,} | {ms(lat['nearest'])} | {ms(lat['nearest_all'])} | "
                   f"{ms(lat['search'])} | {ms(lat['get_hit'])} | "
                   f"{pct(lat['get_miss'], 50):.4f} | {ms(lat['put'])} | "
                   f"{pct(r['scan'], 50):.2f} |")
    return out


def accuracy_table(results: list[dict[str, Any]]) -> list[str]:
    efs = " | ".join(f"graph recall@1, ef {ef}" for ef in WHAT_IF_EF)
    out = [f"| entries | graph recall@1 (all / dup / novel) | `nearest` recall@1 (all / dup / "
           f"novel) | queries with an exact match >= {THRESHOLD} | ... found by `nearest` "
           f"@{THRESHOLD} | ... among its {2 * K} candidates (no graph-score pre-filter) | graph "
           f"cosine - exact cosine, mean / p5 | {efs} (what-if) |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(WHAT_IF_EF)]
    for r in results:
        a = r["acc"]

        def three(name: str, a: dict[str, Any] = a) -> str:
            return f"{a[name]['all']:.3f} / {a[name]['para']:.3f} / {a[name]['novel']:.3f}"

        efs = " | ".join(f"{a[f'ef{ef}']['all']:.3f}" for ef in WHAT_IF_EF)
        out.append(f"| {r['size']:,} | {three('search')} | {three('nearest_all')} | "
                   f"{a['exact_hits']} ({a['para_exact_hits']} dup) | {a['hit_recall']:.3f} "
                   f"| {a['hit_recall_unfiltered']:.3f} | {a['bias']['mean']:+.3f} / "
                   f"{a['bias']['p5']:+.3f} | {efs} |")
    return out


def what_if_latency(results: list[dict[str, Any]]) -> list[str]:
    heads = " | ".join(f"graph query, ef {ef}, p50 / p99" for ef in WHAT_IF_EF)
    out = [f"| entries | {heads} |", "| ---: |" + " ---: |" * len(WHAT_IF_EF)]
    for r in results:
        lat = r["load"]["lat"]
        out.append(f"| {r['size']:,} | " + " | ".join(ms(lat[f"ef{ef}"]) for ef in WHAT_IF_EF)
                   + " |")
    return out


def open_table(results: list[dict[str, Any]]) -> list[str]:
    out = ["| entries | bulk row load s | open #1: rebuild from rows s | indexing rate, first / "
           "last minute (entries/s) | minor page faults per entry | system share of CPU | "
           "save graph s | open #2: load saved graph s | batch `add_items` build s "
           "(reference) |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        rb, ld = r["rebuild"], r["load"]
        rates = index_rates(rb["samples"])
        took = (f"> {rb['open_s']:.0f} (stopped: {rb['indexed']:,} indexed)"
                if rb.get("timed_out") else f"{rb['open_s']:.1f}")
        rate = (f"{rates['first_min']:,.0f} / {rates['last_min']:,.0f}" if rates else "-")
        faults = f"{rates['faults_per_entry']:,.0f}" if rates else "-"
        share = f"{rates['sys_share']:.0%}" if rates else "-"
        save = "-" if rb.get("timed_out") else f"{rb['save_s']:.2f}"
        out.append(f"| {r['size']:,} | {r['bulk_s']:.1f} | {took} | {rate} | {faults} | "
                   f"{share} | {save} | {ld['open_s']:.2f} | {r['batch_s']:.1f} |")
    return out


def memory_table(results: list[dict[str, Any]]) -> list[str]:
    out = ["| entries | RSS growth over open #1 (rebuild) MB, raw / trimmed | peak RSS growth "
           "during open #1 MB | RSS growth over open #2 (load) MB, raw / trimmed | peak RSS "
           "growth during open #2 MB | cache.db (+WAL) MB | index dir MB |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        rb, ld = r["rebuild"], r["load"]
        first = (f"{rb['rss_mb']:.0f} at the cap" if rb.get("timed_out")
                 else f"{rb['rss_mb']:.0f} / {rb['rss_trim_mb']:.0f}")
        peak = "-" if rb.get("timed_out") else f"{rb['peak_mb']:.0f}"
        out.append(f"| {r['size']:,} | {first} | {peak} | {ld['rss_mb']:.0f} / "
                   f"{ld['rss_trim_mb']:.0f} | {ld['peak_mb']:.0f} | {r['db_mb']:.0f} | "
                   f"{r['index_mb']:.0f} |")
    return out


def report(results: list[dict[str, Any]], groups: dict[str, Any], args: argparse.Namespace,
           n_real: int, facts: list[str]) -> str:
    n_q = groups["paraphrases"] + groups["novel"]
    synth = ", ".join(f"{r['size']:,}: {r['synthetic']:,} synthetic" for r in results)
    lines = [
        f"# Semantic cache at scale, {time.strftime('%Y-%m-%d %H:%M')}", "",
        *facts,
        f"- Command: `{' '.join(['.venv/bin/python', 'bench/cache_scale.py', *sys.argv[1:]])}`",
        f"- Store: `SqliteCacheStore`, all entries in ONE scope; graph = voyager HNSW "
        f"({graph_params()}); `nearest(k={K})` asks the graph for {2 * K} candidates, drops "
        f"those whose graph score is under the threshold minus the store's slack, and "
        f"re-scores the rest from their rows' float16 vectors; threshold {THRESHOLD} (the "
        f"default `cache.semantic.threshold`)",
        f"- Vectors: all-MiniLM-L6-v2 int8 embeddings of {n_real:,} real QQP questions; "
        f"entries beyond them are SYNTHETIC neighbours (real vector + Gaussian noise, "
        f"sigma {SIGMA[0]}-{SIGMA[1]} per dimension, cosine to parent ~0.83-0.98, "
        f"re-normalised), shuffled in ({synth})",
        f"- Queries: {n_q:,} real held-out questions per size: {groups['paraphrases']:,} QQP "
        f"duplicates of a stored question (\"dup\") + {groups['novel']:,} other unseen ones "
        f"(\"novel\"); `get`: {args.get_queries:,} random stored keys and as many unknown ones; "
        f"exact-scan reference: {args.scan_queries} queries",
        "- Each phase runs in a fresh process; latency is one call at a time on uvloop, "
        "including aiosqlite's thread hop for row reads. RSS growth is over `open()` "
        "(trimmed = after gc + malloc_trim); peak = VmHWM during open.",
        "", "## Lookup latency (ms)", "", *latency_table(results), "",
        f"`nearest` @{THRESHOLD} is the gateway's default (a query with no candidate above "
        "the pre-filter reads no row); @0 every query reads and re-scores its 10 candidate "
        "rows.", "",
        "## Accuracy against exact brute force (float16 stored vectors)", "",
        *accuracy_table(results), "",
        "recall@1 = the top result agrees with the exact best (ties count). `nearest` = after "
        "re-scoring the graph's 10 candidates exactly. The last column pair is what the graph "
        "alone gives with `query_ef` 50 / 100 instead of the store's own query ef (header); "
        "their latency:", "",
        *what_if_latency(results), "",
        "## Open time", "", *open_table(results), "",
        "open #1 is the store's own rebuild of the graph from the rows; the reference builds "
        "the same graph in the benchmark with one batch `add_items` per 100k rows (voyager's "
        "threads). Indexing rates, page faults and CPU split are the rebuild process's own "
        "(sampled every 2 s from /proc/self; '-' when the vectors arrived in too few steps "
        "to sample).", "",
        "## Memory and disk", "", *memory_table(results), "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="comma-separated entry counts (default: 10000,100000,1000000)")
    p.add_argument("--paraphrases", type=int, default=1000,
                   help="queries that duplicate a stored question (default 1000)")
    p.add_argument("--novel", type=int, default=1000,
                   help="unseen queries (default 1000)")
    p.add_argument("--get-queries", type=int, default=2000, help="exact gets (default 2000)")
    p.add_argument("--puts", type=int, default=200,
                   help="new entries put into the big scope, timed (default 200)")
    p.add_argument("--scan-queries", type=int, default=100,
                   help="queries timed for the exact NumPy scan reference (default 100)")
    p.add_argument("--rebuild-timeout-s", type=float, default=1200.0,
                   help="stop the rebuild-from-rows open after this long; the graph is then "
                        "batch-built so the rest can be measured (default 1200)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--keep", action="store_true",
                   help=f"keep each size's cache.db and index under {WORK}")
    p.add_argument("--no-write", action="store_true", help="print only, no results file")
    p.add_argument("--worker", choices=["rebuild", "load"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    global THRESHOLD
    from seawall.config import SemanticCacheSettings

    THRESHOLD = SemanticCacheSettings().threshold
    args = parse_args()
    if args.worker:
        worker_main(args.worker, args.workdir)
        return
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    facts = machine_facts()  # the code measured is the code at the start
    log(f"reading {args.data}")
    questions = load_questions(args.data)
    log(f"{len(questions.texts):,} unique questions, {len(questions.duplicates):,} "
        f"duplicate pairs")
    vecs = embed_texts(questions.texts, WORK)
    split = make_split(questions, args.paraphrases, args.novel, args.seed)
    queries = np.ascontiguousarray(vecs[np.concatenate([split.paraphrases, split.novel])])
    groups = {"paraphrases": len(split.paraphrases), "novel": len(split.novel)}
    results = []
    raw = WORK / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for size in sizes:
        results.append(measure_size(size, split, vecs, queries, groups, questions.texts, args))
        raw.write_text(json.dumps(results, default=float))  # kept if the report fails
    text = report(results, groups, args, len(split.stored), facts)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"cache-scale-{time.strftime('%Y-%m-%d-%H%M')}.md"
        path.write_text(text)
        log(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
