"""A background response whose ``seawall worker`` is killed with SIGKILL
mid-answer (on the shared Postgres, and on SQLite shared by the processes of
one machine): another worker takes the job once its lease lapses and, by the
documented rule, ends the response ``failed`` after the last logged event --
a reader that resumes sees every event once, in order, never a second answer
interleaved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.gateway import run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-bg-chaos"
TEXT = " ".join(f"word{i}" for i in range(60))


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    running: list[subprocess.Popen[str]] = []
    yield running
    for p in running:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _worker(conf: Path, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "seawall.cli", "worker", "-c", str(conf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "SEAWALL_CONFIG": ""})
    procs.append(p)
    return p


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_killed_worker_mid_answer_leaves_a_clean_log(
        upstream: FakeUpstreamClient, backend: str, request: pytest.FixtureRequest,
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    upstream.reset()
    upstream.script(default={"tokens_per_s": 4})  # ~15 s: plenty of time to kill it
    config: dict[str, Any] = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}},
        "responses": {"background_poll_s": 0.05},
        "jobs": {"run_in_server": False, "lease_s": 2.0, "poll_s": 0.1},
    }
    if backend == "postgres":
        config["store"] = {"kind": "postgres", "url": request.getfixturevalue("pg_url")}
        worker_data = tmp_path / "w"
    else:  # the embedded store: the worker shares the gateway's data_dir
        worker_data = tmp_path / "gw" / "data"
    conf = tmp_path / "worker.yaml"
    conf.write_text(json.dumps({**config, "data_dir": str(worker_data)}))
    with run_gateway(config, tmp_path / "gw") as gw:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
        first = _worker(conf, procs)
        stream = c.responses.create(model="gpt-x", input=TEXT, background=True, stream=True)
        seen: list[Any] = []
        for event in stream:  # waits while the worker starts and claims the job
            seen.append(event)
            if event.type == "response.output_text.delta" and len(seen) >= 6:
                break
        stream.close()
        rid = seen[0].response.id
        first.send_signal(signal.SIGKILL)  # mid-answer: no release, no final event
        first.wait(10)
        _worker(conf, procs)
        rest = list(c.responses.retrieve(rid, stream=True,
                                         starting_after=seen[-1].sequence_number))
        events = seen + rest
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[-1].type == "response.failed"
        assert sum(e.type == "response.created" for e in events) == 1
        deadline = time.monotonic() + 10
        r = c.responses.retrieve(rid)
        while r.status != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
            r = c.responses.retrieve(rid)
        assert r.status == "failed" and r.error is not None and r.error.code == "worker_lost"
        assert len(upstream.calls()["requests"]) == 1  # never sent twice
