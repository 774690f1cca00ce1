#!/usr/bin/env python3
"""Ingestion throughput next to the embedder's raw throughput on the same chunks.

Issue 14 asks that ingesting SciFact run within 15% of what the embedder alone
does with the same chunks: whatever ingestion adds (loading, chunking, SQLite
transactions, batching) should cost little next to the model.

1. The first ``--docs`` SciFact abstracts (``../shared/data/beir_scifact``) are
   loaded and chunked exactly as ingestion does (``chunk_document``,
   ``index_text``), to know the chunk texts.
2. Raw: ``Embedder.embed`` over those texts, length-sorted, in batches of the
   ingestor's size (``rag.embed_batch``) and of 64: chunks/s.
3. Ingest: a fresh ``RagService`` in a temporary folder, ``Ingestor.ingest_many``
   over 32 documents a call (as ``seawall ingest`` and the upload route batch
   them): chunks/s, wall clock, including the SQLite writes.

Raw runs before and after ingestion and the better of the two is taken, so a
drift in machine speed does not count against ingestion.

Usage (repo root; run nothing else beside it):
    .venv/bin/python bench/ingest_throughput.py [--docs 1000]
Writes bench/results/ingest-throughput-<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seawall.config import RagSettings  # noqa: E402
from seawall.ml.embedder import Embedder  # noqa: E402
from seawall.ml.tokens import TokenCounter  # noqa: E402
from seawall.rag.chunking import chunk_document  # noqa: E402
from seawall.rag.loaders import load_text  # noqa: E402
from seawall.rag.service import RagService  # noqa: E402
from seawall.rag.store import index_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "beir_scifact"
BATCH_DOCUMENTS = 32


def raw(embedder: Embedder, texts: list[str], batch: int) -> float:
    """Seconds to embed ``texts`` length-sorted in batches of ``batch``."""
    order = sorted(texts, key=len)
    t0 = time.perf_counter()
    for i in range(0, len(order), batch):
        embedder.embed(order[i:i + batch])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    args = parser.parse_args()
    with open(DATA / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(args.docs), strict=False)]
    settings = RagSettings()
    tokens = TokenCounter()
    tokens.warm_up()
    embedder = Embedder(max_length=settings.embed_max_tokens)  # as RagService makes it
    embedder.embed(["warm up"])
    with tempfile.TemporaryDirectory() as tmp:
        svc = RagService(settings, Path(tmp) / "rag.db", tokens, embedder)
        docs = [load_text(r["text"], source=r["_id"], format="text",
                          title=r.get("title") or None)[0] for r in rows]
        opts = svc.ingestor.options
        texts = [index_text(d.title, c.heading_path, c.text)
                 for d in docs for c in chunk_document(d, opts, tokens.count)]
        n = len(texts)
        print(f"{len(docs)} documents, {n} chunks", flush=True)
        batch = svc.ingestor.embed_batch
        raw_s = {b: raw(embedder, texts, b) for b in sorted({batch, 64})}
        print(f"raw: {', '.join(f'batch {b}: {n / s:.1f} chunks/s' for b, s in raw_s.items())}",
              flush=True)
        info = svc.store.ensure_collection("bench", "scifact")
        known = svc.store.sources(info.id)
        t0 = time.perf_counter()
        chunks = 0
        embed_s = 0.0
        for start in range(0, len(docs), BATCH_DOCUMENTS):
            for r in svc.ingestor.ingest_many(info.id, docs[start:start + BATCH_DOCUMENTS],
                                              known):
                chunks += r.chunks
                embed_s += r.embed_s
        ingest_s = time.perf_counter() - t0
        print(f"ingest: {chunks / ingest_s:.1f} chunks/s", flush=True)
        again = raw(embedder, texts, batch)
        raw_s[batch] = min(raw_s[batch], again)
        svc.store.close()
    best_raw = n / min(raw_s.values())
    ingest_rate = chunks / ingest_s
    share = ingest_rate / best_raw
    today = dt.date.today().isoformat()
    report = f"""# Ingestion throughput vs the raw embedder ({today})

`bench/ingest_throughput.py --docs {args.docs}`: {len(docs)} SciFact abstracts, {n} chunks
(shipped chunking), MiniLM-L6 int8 on {os.cpu_count()} cores, {platform.python_version()},
load average at the end {os.getloadavg()[0]:.2f}.

| path | chunks/s | of the raw embedder |
|---|---:|---:|
""" + "".join(f"| raw embedder, length-sorted batches of {b} | {n / s:.1f} | "
              f"{(n / s) / best_raw:.0%} |\n" for b, s in sorted(raw_s.items())) + f"""\
| ingestion (`Ingestor.ingest_many`, 32 documents a call, SQLite included) | \
{ingest_rate:.1f} | **{share:.0%}** |

Inside ingestion the embedder took {embed_s:.1f} s of {ingest_s:.1f} s
({embed_s / ingest_s:.0%}). Target (issue 14): ingestion within 15% of the raw
embedder, i.e. at least 85%: {"met" if share >= 0.85 else "NOT met"}.
"""
    out = ROOT / "bench" / "results" / f"ingest-throughput-{today}.md"
    out.write_text(report)
    print(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
