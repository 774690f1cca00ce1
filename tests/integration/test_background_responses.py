"""Background responses (``background=True``) through the official ``openai``
SDK against real gateways in front of the fake upstream (which echoes the
last user message word by word): polling, a stream resumed with
``starting_after`` after a dropped connection, cancel, a retried job after
a worker died mid-answer, and two replicas on Postgres."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from seawall.api.responses_background import KIND, BackgroundResponses
from seawall.jobs.runner import JobRunner
from seawall.pipeline.stages import hash_key
from seawall.responses.background_log import BackgroundLog
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-background"
FINAL = ("completed", "incomplete", "failed", "cancelled")
TEXT = " ".join(f"word{i}" for i in range(40))


def _config(upstream: FakeUpstreamClient, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}},
        "responses": {"background_poll_s": 0.02},
        "jobs": {"poll_s": 0.05, "lease_s": 2.0},
        **extra,
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream), tmp_path_factory.mktemp("background")) as running:
        yield running


@pytest.fixture
def client(gw: Running, upstream: FakeUpstreamClient) -> openai.OpenAI:
    upstream.reset()
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)


def _client(g: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url + "/v1", api_key=MASTER, max_retries=0)


def _wait(c: openai.OpenAI, rid: str, statuses: tuple[str, ...] = FINAL,
          within_s: float = 20.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        r = c.responses.retrieve(rid)
        if r.status in statuses or time.monotonic() > deadline:
            return r
        time.sleep(0.02)


def _check_sequence(events: list[Any]) -> str:
    """Every sequence number once, in order, ending with response.completed;
    the text the deltas carry."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_background_create_returns_queued_and_polls_to_the_direct_answer(
        gw: Running, client: openai.OpenAI) -> None:
    direct = client.responses.create(model="gpt-x", input="alpha beta gamma",
                                     instructions="be brief")
    r = client.responses.create(model="gpt-x", input="alpha beta gamma",
                                instructions="be brief", background=True)
    assert r.status == "queued" and r.background is True and r.output == []
    done = _wait(client, r.id)
    assert done.status == "completed" and done.background is True
    assert done.output_text == direct.output_text == "alpha beta gamma"
    assert done.usage is not None and direct.usage is not None
    assert done.usage.input_tokens == direct.usage.input_tokens
    assert done.usage.output_tokens == direct.usage.output_tokens
    # Its id names the trace record of the job's model call, as a direct one's does.
    record = next(t for t in gw.traces() if t["trace_id"] == r.id.removeprefix("resp_"))
    assert record["endpoint"] == "responses" and record["completion_tokens"] == 3
    # It is a conversation turn like any other.
    nxt = client.responses.create(model="gpt-x", input="delta", previous_response_id=r.id)
    assert nxt.usage is not None and nxt.usage.input_tokens > direct.usage.input_tokens


def test_background_refuses_store_false_and_cancel_of_a_direct_one(
        client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-x", input="x", background=True, store=False)
    assert e.value.status_code == 400
    direct = client.responses.create(model="gpt-x", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(direct.id)
    with pytest.raises(openai.BadRequestError):  # only background ones stream from the store
        list(client.responses.retrieve(direct.id, stream=True))


def test_stream_resumed_with_starting_after_loses_and_repeats_nothing(
        client: openai.OpenAI, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"tokens_per_s": 40})
    first: list[Any] = []
    stream = client.responses.create(model="gpt-x", input=TEXT, background=True, stream=True)
    for event in stream:
        first.append(event)
        if event.sequence_number >= 6:
            break
    stream.close()  # the connection drops mid-answer
    rid = first[0].response.id
    assert _wait(client, rid, ("in_progress", *FINAL)).status == "in_progress"  # still going
    rest = list(client.responses.retrieve(rid, stream=True,
                                          starting_after=first[-1].sequence_number))
    assert _check_sequence(first + rest) == TEXT
    # A late reader replays the whole log and gets the same events.
    again = list(client.responses.retrieve(rid, stream=True))
    assert [e.model_dump() for e in again] == [e.model_dump() for e in first + rest]
    assert client.responses.retrieve(rid).output_text == TEXT


def test_cancel_stops_the_upstream_stream(client: openai.OpenAI,
                                          upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"tokens_per_s": 2})
    r = client.responses.create(model="gpt-x", input=TEXT, background=True)
    assert _wait(client, r.id, ("in_progress", *FINAL)).status == "in_progress"
    deadline = time.monotonic() + 10
    while upstream.calls().get("active", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    cancelled = client.responses.cancel(r.id)
    assert cancelled.status == "cancelled"
    deadline = time.monotonic() + 10
    while upstream.calls().get("cancelled", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    calls = upstream.calls()
    assert calls["cancelled"] == 1 and calls.get("active", 0) == 0
    assert client.responses.retrieve(r.id).status == "cancelled"
    assert client.responses.cancel(r.id).status == "cancelled"  # idempotent
    # Its stream ends (no final event follows a cancel) instead of hanging.
    events = list(client.responses.retrieve(r.id, stream=True))
    assert events and events[0].type == "response.created"
    assert all(e.type != "response.completed" for e in events)


def test_limits_apply_when_the_job_runs_with_the_key_of_the_caller(
        gw: Running, client: openai.OpenAI) -> None:
    secret = "sk-sw-" + uuid.uuid4().hex
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_" + uuid.uuid4().hex[:8], name="slow", tenant="t-rpm1",
        key_hash=hash_key(secret), prefix=secret[:10], rpm=1, created_at=time.time())))
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    first = c.responses.create(model="gpt-x", input="one", background=True)
    second = c.responses.create(model="gpt-x", input="two", background=True)
    assert second.status == "queued"  # enqueueing is not a model call

    def stored(rid: str) -> Any:  # read on the server: a retrieve would count for rpm too
        deadline = time.monotonic() + 20
        while True:
            r = gw.on_server(gw.services.responses.store.get("t-rpm1", rid))
            if r.status in FINAL or time.monotonic() > deadline:
                return r
            time.sleep(0.02)

    assert stored(first.id).status == "completed"
    refused = stored(second.id)
    assert refused.status == "failed"
    assert refused.extra["error"]["code"] == "rate_limit_exceeded"
    rows = gw.on_server(BackgroundLog(gw.services.responses.store).after(second.id, -1))
    assert [d.split("\n")[0] for _, d in rows] == [
        "event: response.created", "event: response.in_progress", "event: response.failed"]
    with pytest.raises(openai.NotFoundError):  # tenant-scoped, as any stored response
        client.responses.retrieve(first.id)


def test_cancel_of_a_finished_response_returns_it_unchanged(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-x", input="one two", background=True)
    assert _wait(client, r.id).status == "completed"
    assert client.responses.cancel(r.id).status == "completed"


def test_queued_cancel_and_a_retry_after_a_dead_attempt(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    """No runner in this gateway: jobs stay queued until one is started."""
    upstream.reset()
    config = _config(upstream, jobs={"run_in_server": False, "poll_s": 0.05, "lease_s": 2.0})
    with run_gateway(config, tmp_path) as g:
        c = _client(g)
        queued = c.responses.create(model="gpt-x", input="never run", background=True)
        assert c.responses.cancel(queued.id).status == "cancelled"
        job = g.on_server(g.services.jobs.get(queued.id))
        assert job is not None and job.state == "cancelled"
        # Its job cancelled behind the API's back (`seawall jobs cancel`): the
        # response ends too, and its stream does not wait forever.
        other = c.responses.create(model="gpt-x", input="cancelled by an operator",
                                   background=True)
        assert g.on_server(g.services.jobs.cancel(other.id)) is not None
        assert list(c.responses.retrieve(other.id, stream=True)) == []
        assert c.responses.retrieve(other.id).status == "cancelled"

        # An earlier attempt of this one logged two events, then its worker died.
        r = c.responses.create(model="gpt-x", input="half done", background=True)
        blog = BackgroundLog(g.services.responses.store)
        g.on_server(blog.append(r.id, [(0, "event: response.created\ndata: {}\n\n"),
                                       (1, "event: response.in_progress\ndata: {}\n\n")]))
        runner = JobRunner(g.services.jobs, g.services.settings.jobs, builtins=False)
        runner.register(KIND, BackgroundResponses(g.services).run)
        g.on_server(runner.start())
        try:
            done = _wait(c, r.id)
        finally:
            g.on_server(runner.stop())
        assert done.status == "failed" and done.error is not None
        assert done.error.code == "worker_lost"
        rows = g.on_server(blog.after(r.id, -1))
        assert [seq for seq, _ in rows] == [0, 1, 2]
        assert rows[2][1].startswith("event: response.failed\n")
        assert upstream.calls()["requests"] == []  # never sent twice
        assert c.responses.retrieve(queued.id).status == "cancelled"  # the runner skipped it


def test_two_replicas_on_postgres(upstream: FakeUpstreamClient, pg_url: str,
                                  redis_url: str, tmp_path: Path) -> None:
    upstream.reset()
    upstream.script(default={"tokens_per_s": 40})
    store = {"store": {"kind": "postgres", "url": pg_url}, "redis": {"url": redis_url}}
    a_conf = _config(upstream, **store)
    b_conf = _config(upstream, **store, jobs={"run_in_server": False})
    with run_gateway(a_conf, tmp_path / "a") as a, run_gateway(b_conf, tmp_path / "b") as b:
        ca, cb = _client(a), _client(b)
        r = ca.responses.create(model="gpt-x", input=TEXT, background=True)
        assert r.status == "queued"
        assert _check_sequence(list(cb.responses.retrieve(r.id, stream=True))) == TEXT
        assert cb.responses.retrieve(r.id).output_text == TEXT
        # Streamed from the start on B (A's runner does the work).
        events = list(cb.responses.create(model="gpt-x", input="on b", background=True,
                                          stream=True))
        assert _check_sequence(events) == "on b"
