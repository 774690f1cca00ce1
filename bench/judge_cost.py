#!/usr/bin/env python3
"""What judging costs the gateway.

1. The request path: CPU per answer of the judges' sampling decision
   (``Judges.consider``, called by the record stage), when the answer is not
   sampled (target: under 10 us) and when it is (payload built and queued).
2. A worker: judged answers per second through the whole job path (durable
   queue, judge call through the provider layer, verdict parsed, Score row
   stored), with the in-process fake model as the judge, so the figure is
   Seawall's own overhead, not a model's speed.

Usage (from the repo root)::

    .venv/bin/python bench/judge_cost.py            # ~1 min
    .venv/bin/python bench/judge_cost.py --jobs 2000 --store postgres --pg-url ...
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seawall.api.wire import ChatCompletionRequest, convert  # noqa: E402
from seawall.config import Settings, parse_settings  # noqa: E402
from seawall.jobs.queue import JobState  # noqa: E402
from seawall.jobs.runner import JobRunner  # noqa: E402
from seawall.observe.metrics import Metrics  # noqa: E402
from seawall.observe.records import TraceRecord  # noqa: E402
from seawall.pipeline.context import RequestContext, new_trace_id  # noqa: E402
from seawall.providers.registry import ModelRegistry  # noqa: E402
from seawall.quality.judge_call import JUDGE_TENANT, JudgeCaller  # noqa: E402
from seawall.quality.judges import KIND, Judges  # noqa: E402
from seawall.routing.router import Router  # noqa: E402
from seawall.store.factory import Stores  # noqa: E402

VERDICT = '{"score": 4, "reasoning": "Answers the question clearly."}'


def settings_for(judges: list[dict[str, Any]], data_dir: str, store: dict[str, Any] | None,
                 concurrency: int = 4) -> Settings:
    return parse_settings({
        "data_dir": data_dir, **({"store": store} if store else {}),
        "providers": {"judge": {"type": "fake", "text": VERDICT}},
        "models": {"judge": {"provider": "judge"}, "chat": {"provider": "judge"}},
        "jobs": {"concurrency": concurrency, "poll_s": 0.05},
        "quality": {"judges": judges, "max_pending": 1_000_000}})


def answer(i: int = 0) -> tuple[RequestContext, TraceRecord]:
    """A typical answer: a short system prompt, a 1 KB question, a 1 KB answer."""
    raw = {"model": "chat", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain the difference between a process and a thread. "
         * 18}]}
    ctx = RequestContext(endpoint="chat.completions", trace_id=new_trace_id())
    ctx.raw, ctx.request = raw, convert(raw, ChatCompletionRequest)
    ctx.gatherer.add({"choices": [{"index": 0, "delta": {"content": "A process owns " * 70}}]})
    rec = TraceRecord(trace_id=ctx.trace_id, endpoint="chat.completions", started_at=0,
                      tenant="acme", model="chat", prompt_version="faq@3")
    return ctx, rec


def per_call_ns(judges: Judges, n: int) -> float:
    ctx, rec = answer()
    consider = judges.consider
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            consider(ctx, rec)
        best = min(best, (time.perf_counter_ns() - t0) / n)
        judges._pending.clear()
    return best


def request_path(tmp: str) -> list[tuple[str, float]]:
    def make(judges: list[dict[str, Any]]) -> Judges:
        s = settings_for(judges, tmp, None)
        stores = Stores(s)
        return Judges(s.quality, stores.jobs(), stores.scores(), None,  # type: ignore[arg-type]
                      None, Metrics())

    j = {"judge_model": "judge", "rubrics": ["helpfulness"]}
    rows = [
        ("no judges configured (no hook at all)", 0.0),
        ("1 judge, another model (no match)",
         per_call_ns(make([{**j, "name": "a", "match": {"models": ["x"]}}]), 200_000)),
        ("1 judge, matching, sample_rate 1e-9 (not drawn)",
         per_call_ns(make([{**j, "name": "a", "sample_rate": 1e-9}]), 200_000)),
        ("4 judges, each matching model+prompt, not drawn",
         per_call_ns(make([{**j, "name": f"a{i}", "sample_rate": 1e-9,
                            "match": {"models": ["chat"], "prompts": ["faq"]}}
                           for i in range(4)]), 200_000)),
        ("1 judge, sampled (payload built, queued)",
         per_call_ns(make([{**j, "name": "a", "sample_rate": 1.0}]), 20_000)),
    ]
    return rows


async def worker(tmp: str, n: int, concurrency: int, store: dict[str, Any] | None,
                 rubrics: int) -> tuple[float, float]:
    names = ["helpfulness", "correctness", "safety"][:rubrics]
    data = tempfile.mkdtemp(dir=tmp)  # a fresh SQLite store per run
    s = settings_for([{"name": "bench", "judge_model": "judge", "rubrics": names,
                       "sample_rate": 1.0}], data, store, concurrency)
    stores = Stores(s)
    await stores.open()
    queue, scores = stores.jobs(), stores.scores()
    await queue.open()
    await scores.open()
    registry = ModelRegistry(s)
    await registry.start()
    judges = Judges(s.quality, queue, scores,
                    JudgeCaller(registry, Router(registry, s.resilience)), None, Metrics())
    tag = f"{concurrency}-{rubrics}-{time.time_ns()}"
    for i in range(n):
        ctx, rec = answer(0)
        ctx.trace_id = rec.trace_id = f"{tag}-{i}"
        judges.consider(ctx, rec)
    await judges.flush()
    runner = JobRunner(queue, s.jobs, Metrics())
    runner.register(KIND, judges.run)
    t0 = time.perf_counter()
    await runner.start()
    while True:
        active = await queue.list(state=str(JobState.QUEUED), tenant=JUDGE_TENANT, limit=1)
        running = await queue.list(state=str(JobState.RUNNING), tenant=JUDGE_TENANT, limit=1)
        if not active and not running:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    await runner.stop()
    stored = sum(1 for x in await scores.window(0, judge="bench", limit=10 * n)
                 if x.trace_id.startswith(tag))
    await registry.close()
    await queue.close()
    await scores.close()
    await stores.close()
    return n / elapsed, stored / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--pg-url", help="also measure on this Postgres (store.kind postgres)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("\nRequest path: judges' sampling decision per answer (best of 5 runs)\n")
        print("| configuration | CPU per answer |")
        print("|---|---|")
        for name, ns in request_path(tmp):
            print(f"| {name} | {ns / 1000:.2f} us |")
        stores = [("sqlite", None)] + ([("postgres", {"kind": "postgres",
                                                      "url": args.pg_url})]
                                       if args.pg_url else [])
        print(f"\nOne worker, fake judge model, {args.jobs} judge jobs\n")
        print("| store | jobs.concurrency | rubrics per answer | judged answers/s | scores/s |")
        print("|---|---|---|---|---|")
        for store_name, store in stores:
            for conc, rubrics in ((4, 1), (16, 1), (16, 3)):
                answers, stored = asyncio.run(worker(tmp, args.jobs, conc, store, rubrics))
                print(f"| {store_name} | {conc} | {rubrics} | {answers:.0f} | {stored:.0f} |")


if __name__ == "__main__":
    main()
