"""Judge samples survive kill -9 (quality/judges.py, "Why no sample is lost").

A real ``seawall serve`` process answers sampled requests while its job
queue refuses writes (another process holds jobs.db's write lock), so each
sample is still in memory when the trace records are already stored; then it
is killed with SIGKILL. After a restart every sampled answer is judged, once.
Putting the same write-ahead file back (a crash after the jobs ran) and
purging some of the job rows judges nothing again. The judge is the fake
upstream, over a real socket; its call count is the number of verdicts asked.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.servers import FakeUpstreamClient, serve_process

pytestmark = pytest.mark.timeout(180)

GOOD = '{"score": 4, "reasoning": "Clear."}'
N = 8
MASTER = "sk-master-judge-kill"


def _config(fake: FakeUpstreamClient, max_pending: int = 1000) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"fake": {"type": "fake"},
                      "judge": {"type": "openai", "base_url": fake.base_url + "/v1"}},
        "models": {"chat": {"provider": "fake"},
                   "judge": {"provider": "judge", "model": "upstream-judge"}},
        "observe": {"traces": {"journal_each_record": True}},
        "jobs": {"backoff_s": 0.05, "backoff_max_s": 0.2, "poll_s": 0.1},
        "quality": {"judges": [{"name": "j1", "match": {"models": ["chat"]},
                                "judge_model": "judge", "rubrics": ["helpfulness"],
                                "sample_rate": 1.0, "max_attempts": 2, "timeout_s": 5.0}],
                    "max_pending": max_pending},
    }


def _ask(url: str, i: int) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0, timeout=10)
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": f"question {i}"}])
    assert raw.parse().choices[0].message.content == f"question {i}"
    return raw.headers["x-request-id"]


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as c:
        return list(c.execute(sql, args))


def _until(what: Callable[[], bool], within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not what():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


@contextlib.contextmanager
def _jobs_locked(path: Path) -> Iterator[None]:
    """Another process holds the job queue's write lock: every enqueue waits, then fails."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        c.execute("ROLLBACK")
        c.close()


def _stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_kill_9_before_enqueue_then_replay_judges_every_sample_once(
        tmp_path: Path, upstream: FakeUpstreamClient) -> None:
    upstream.reset()
    upstream.script(default={"text": GOOD})
    data = tmp_path / "data"
    traces, jobs, wal = data / "seawall.db", data / "jobs.db", data / "traces.wal"
    url, proc, _ = serve_process(tmp_path, upstream, **_config(upstream))
    try:
        with _jobs_locked(jobs):
            rids = [_ask(url, i) for i in range(N)]
            # The records are stored (the old design trimmed the write-ahead
            # file here), their samples still wait for the job queue.
            _until(lambda: len(_rows(traces, "SELECT trace_id FROM traces WHERE trace_id IN "
                                     f"({','.join('?' * N)})", *rids)) == N)
            assert wal.stat().st_size > 0
            proc.kill()  # SIGKILL: no drain, no enqueue at shutdown
            proc.wait(10)
        saved = tmp_path / "traces.wal.saved"
        shutil.copy(wal, saved)
        assert _rows(jobs, "SELECT count(*) FROM jobs") == [(0,)]
        assert upstream.calls()["calls"] == 0

        url, proc, _ = serve_process(tmp_path, upstream, **_config(upstream))

        def judged() -> list[tuple[Any, ...]]:
            return _rows(traces, "SELECT trace_id, judge, rubric, status FROM quality_scores")

        _until(lambda: len(judged()) >= N)
        assert sorted(judged()) == sorted((r, "j1", "helpfulness", "ok") for r in rids)
        assert upstream.calls()["calls"] == N  # one verdict per answer
        _stop(proc)

        # A crash after the jobs ran: the same write-ahead file is replayed,
        # and some job rows are gone (purged): nothing is judged again.
        shutil.copy(saved, wal)
        with contextlib.closing(sqlite3.connect(jobs)) as c:
            c.execute(f"DELETE FROM jobs WHERE id IN ({','.join('?' * 3)})",
                      [f"judge_{r}" for r in rids[:3]])
            c.commit()
        url, proc, _ = serve_process(tmp_path, upstream, **_config(upstream))

        def finished() -> list[tuple[Any, ...]]:
            return _rows(jobs, "SELECT id, result FROM jobs WHERE kind = 'judge' "
                               "AND state = 'succeeded'")

        _until(lambda: len(finished()) == N and not wal.with_suffix(".replaying").exists()
               and not wal.with_suffix(".journal").exists())
        recreated = {i: r for i, r in finished() if i in {f"judge_{x}" for x in rids[:3]}}
        assert len(recreated) == 3
        assert all('"j1/helpfulness":"done"' in r for r in recreated.values()), recreated
        assert upstream.calls()["calls"] == N
        assert len(judged()) == N
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {MASTER}"},
                     timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_samples_over_the_bound_are_counted_not_lost_silently(
        tmp_path: Path, upstream: FakeUpstreamClient) -> None:
    """``quality.max_pending`` 2 while the job queue refuses writes: every
    sampled answer ends judged or counted as dropped, none in between."""
    upstream.reset()
    upstream.script(default={"text": GOOD})
    data = tmp_path / "data"
    url, proc, _ = serve_process(tmp_path, upstream, **_config(upstream, max_pending=2))
    try:
        with _jobs_locked(data / "jobs.db"):
            rids = [_ask(url, i) for i in range(5)]
            assert _metric(url, 'seawall_judge_sampled_total{judge="j1"}') == 5
            dropped = _metric(url, 'seawall_judge_skipped_total{judge="j1",reason="pending_full"}')
            assert dropped >= 2  # 2 waiting, at most one more being enqueued
        _until(lambda: len(_rows(data / "seawall.db",
                                 "SELECT trace_id FROM quality_scores")) + dropped == 5)
        judged = {r for (r,) in _rows(data / "seawall.db", "SELECT trace_id FROM quality_scores")}
        assert judged <= set(rids) and upstream.calls()["calls"] == len(judged)
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_without_stored_content_a_lost_sample_is_counted(
        tmp_path: Path, upstream: FakeUpstreamClient) -> None:
    """``store_content: false``: the replayed record cannot rebuild the
    judge's payload, so the samples lost with the process are counted."""
    upstream.reset()
    upstream.script(default={"text": GOOD})
    data = tmp_path / "data"
    config = _config(upstream)
    config["observe"]["traces"]["store_content"] = False
    url, proc, _ = serve_process(tmp_path, upstream, **config)
    try:
        with _jobs_locked(data / "jobs.db"):
            for i in range(3):
                _ask(url, i)
            proc.kill()
            proc.wait(10)
        url, proc, _ = serve_process(tmp_path, upstream, **config)
        name = 'seawall_judge_skipped_total{judge="j1",reason="no_content"}'
        _until(lambda: _metric(url, name) == 3)
        assert _rows(data / "jobs.db", "SELECT count(*) FROM jobs") == [(0,)]
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
