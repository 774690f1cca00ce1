"""The judge job on both store backends: sampled answer -> job on the durable
queue -> verdict from the (in-process, scripted) fake model -> Score row ->
the quality hook; and a malformed verdict retried, then stored failed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.config import Settings
from seawall.jobs.queue import JobState
from seawall.jobs.runner import JobRunner
from seawall.observe.metrics import Metrics
from seawall.observe.records import TraceRecord
from seawall.pipeline.context import RequestContext
from seawall.providers.registry import ModelRegistry
from seawall.quality.judge_call import JUDGE_TENANT, JudgeCaller
from seawall.quality.judges import KIND, Judges
from seawall.quality.score_store import Score
from seawall.routing.router import Router
from seawall.store.factory import Stores
from tests.contract.conftest import backend_settings


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _settings(kind: str, tmp: Path, request: pytest.FixtureRequest, verdict: str) -> Settings:
    pg = request.getfixturevalue("pg_url") if kind == "postgres" else None
    rd = request.getfixturevalue("redis_url") if kind == "postgres" else None
    return backend_settings(
        kind, tmp, pg, rd,
        providers={"judge": {"type": "fake", "text": verdict}},
        models={"judge": {"provider": "judge",
                          "price": {"input_per_mtok": 100.0, "output_per_mtok": 100.0}}},
        jobs={"backoff_s": 0.0, "poll_s": 0.05},
        quality={"judges": [{"name": "j", "judge_model": "judge", "sample_rate": 1.0,
                             "rubrics": ["helpfulness", "groundedness"],
                             "max_attempts": 2}]})


class Hook:
    def __init__(self) -> None:
        self.seen: list[Score] = []

    async def on_score(self, score: Score) -> None:
        self.seen.append(score)


def _answer(trace_id: str) -> tuple[RequestContext, TraceRecord]:
    raw = {"model": "chat", "messages": [{"role": "user", "content": "what is 2+2?"}]}
    ctx = RequestContext(endpoint="chat.completions", trace_id=trace_id)
    ctx.raw, ctx.request = raw, convert(raw, ChatCompletionRequest)
    ctx.gatherer.add({"choices": [{"index": 0, "delta": {"content": "4"}}]})
    rec = TraceRecord(trace_id=trace_id, endpoint="chat.completions", started_at=0,
                      tenant="acme", model="chat", experiment="exp=b")
    return ctx, rec


@dataclass
class _Judging:
    queue: Any
    scores: Any
    judges: Judges
    runner: JobRunner
    hook: Hook

    async def finished(self, trace_id: str) -> Any:
        """The judge job of ``trace_id`` once it ended."""
        while True:
            job = await self.queue.get(f"judge_{trace_id}", JUDGE_TENANT)
            if job is not None and job.state in (JobState.SUCCEEDED, JobState.DEAD):
                return job
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _judging(settings: Settings) -> AsyncIterator[_Judging]:
    """Judges over the backend's job queue and score store, and a runner for
    their jobs (started by the test), all closed at the end."""
    stores = Stores(settings)
    await stores.open()
    queue, scores = stores.jobs(), stores.scores()
    await queue.open()
    await scores.open()
    registry = ModelRegistry(settings)
    await registry.start()
    hook = Hook()
    judges = Judges(settings.quality, queue, scores,
                    JudgeCaller(registry, Router(registry, settings.resilience)), None,
                    Metrics(), hook)
    runner = JobRunner(queue, settings.jobs, Metrics())
    runner.register(KIND, judges.run)
    try:
        yield _Judging(queue, scores, judges, runner, hook)
    finally:
        await runner.stop(drain_s=0)
        await judges.close()
        await registry.close()
        await queue.close()
        await scores.close()
        await stores.close()


async def _judge_one_answer(settings: Settings) -> tuple[list[Score], Hook, Any]:
    async with _judging(settings) as j:
        j.judges.consider(*_answer("trace-1"))
        await j.judges.flush()
        await j.runner.start()
        job = await asyncio.wait_for(j.finished("trace-1"), 30)
        return await j.scores.for_trace("trace-1"), j.hook, job


async def test_a_verdict_becomes_a_score_and_reaches_the_hook(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = _settings(kind, tmp_path, request, 'ok: {"score": 5, "reasoning": "right"}')
    stored, hook, job = await _judge_one_answer(settings)
    [s] = stored  # groundedness: no sources, not applicable, not stored
    assert (s.judge, s.rubric, s.score, s.reasoning, s.status) == (
        "j", "helpfulness", 5.0, "right", "ok")
    assert (s.tenant, s.model, s.experiment, s.judge_model) == ("acme", "chat", "exp=b", "judge")
    assert s.cost_usd > 0
    assert hook.seen == [s]
    assert job.state is JobState.SUCCEEDED and job.tenant == JUDGE_TENANT
    assert job.result["scores"] == {"j/helpfulness": "ok", "j/groundedness": "not_applicable"}


async def test_a_malformed_verdict_is_retried_then_stored_failed(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = _settings(kind, tmp_path, request, "five stars")
    stored, hook, job = await _judge_one_answer(settings)
    [s] = stored
    assert s.status == "failed" and s.score is None and s.attempts == 2
    assert "malformed verdict" in (s.reasoning or "")
    assert hook.seen == [s] and job.state is JobState.SUCCEEDED


async def test_a_replayed_record_is_judged_once_whatever_became_of_its_job(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A record replayed from the trace journal (its sample lost with the
    process) gets its job from the record alone; replaying it again, even
    after its job row was purged, judges nothing twice."""
    settings = _settings(kind, tmp_path, request, 'ok: {"score": 5, "reasoning": "right"}')
    ctx, rec = _answer("0123456789abcdef0123456789abcdef")
    rec.input, rec.output = ctx.raw["messages"], "4"  # as stored with content
    async with _judging(settings) as j:
        await j.judges.start()
        await j.runner.start()
        await j.judges.replayed([rec])
        job = await asyncio.wait_for(j.finished(rec.trace_id), 30)
        assert job.result["scores"]["j/helpfulness"] == "ok"
        [s] = j.hook.seen
        assert (s.trace_id, s.score, s.experiment) == (rec.trace_id, 5.0, "exp=b")
        await j.judges.replayed([rec])  # its job is there: left as it is
        assert (await j.queue.get(job.id, JUDGE_TENANT)).updated_at == job.updated_at
        assert await j.queue.purge(time.time() + 1) >= 1  # the finished job row is gone
        await j.judges.replayed([rec])  # made again, and it finds the score
        again = await asyncio.wait_for(j.finished(rec.trace_id), 30)
        assert again.result["scores"]["j/helpfulness"] == "done"
        assert j.hook.seen == [s] and len(await j.scores.for_trace(rec.trace_id)) == 1
