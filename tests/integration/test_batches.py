"""The OpenAI Files and Batch APIs through the official ``openai`` SDK,
against a real gateway in front of the fake upstream (which echoes the last
user message, so each output line can be matched to its request)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-batches"


def _config(upstream: FakeUpstreamClient, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"},
                   "emb": {"provider": "oa", "kind": "embedding", "model": "fake-embedding"}},
        "jobs": {"poll_s": 0.05, "lease_s": 2.0},
        "batches": {"concurrency": 4, "max_file_bytes": 2_000_000},
        **extra,
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream), tmp_path_factory.mktemp("batches")) as running:
        yield running


def _client(gw: Running, tenant: str | None = None) -> openai.OpenAI:
    secret = MASTER
    if tenant is not None:
        secret = "sk-sw-" + uuid.uuid4().hex
        gw.on_server(gw.services.store.create_key(ApiKey(
            id="key_" + uuid.uuid4().hex[:8], name=tenant, tenant=tenant,
            key_hash=hash_key(secret), prefix=secret[:10], rpm=None, created_at=time.time())))
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)


def _line(custom_id: str, text: str, model: str = "gpt-x") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model,
                                "messages": [{"role": "user", "content": text}]}})


def _upload(client: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id


def _wait(client: openai.OpenAI, batch_id: str, within_s: float = 120) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return b
        time.sleep(0.1)


def _records(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(x) for x in text.splitlines() if x]


def test_upload_run_and_download(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.reset()
    client = _client(gw)
    lines = [_line(f"ok-{i}", f"hello {i}") for i in range(5)]
    lines += ["{not json", _line("nomodel", "x", model="no-such-model"),
              _line("ok-0", "duplicate id"), json.dumps({"custom_id": 7})]
    file_id = _upload(client, lines)
    assert client.files.retrieve(file_id).bytes > 0
    assert file_id in [f.id for f in client.files.list(purpose="batch")]

    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "one"})
    assert batch.status == "validating" and batch.metadata == {"run": "one"}
    done = _wait(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (9, 5, 4)

    out = _records(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in out) == [f"ok-{i}" for i in range(5)]
    for r in out:
        assert r["error"] is None and r["response"]["status_code"] == 200
        n = r["custom_id"].split("-")[1]
        assert f"hello {n}" in r["response"]["body"]["choices"][0]["message"]["content"]
        assert r["response"]["request_id"]

    errors = {(r["custom_id"], (r["error"] or {}).get("code")): r
              for r in _records(client, done.error_file_id)}
    assert set(errors) == {(None, "invalid_json_line"), ("nomodel", None),
                           ("ok-0", "duplicate_custom_id"), (None, "invalid_custom_id")}
    unknown = errors[("nomodel", None)]["response"]
    assert unknown["status_code"] == 404 and "error" in unknown["body"]
    assert errors[(None, "invalid_json_line")]["error"]["line"] == 6
    assert upstream.calls()["calls"] == 5  # only the valid lines reached the model

    # Files download and delete; batches list.
    assert batch.id in [b.id for b in client.batches.list(limit=10)]
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)


def test_validation_errors_and_limits(gw: Running) -> None:
    client = _client(gw)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    with pytest.raises(openai.APIStatusError) as big:
        client.files.create(file=("x.jsonl", io.BytesIO(b"x" * 2_100_000)), purpose="batch")
    assert big.value.status_code == 413 and "batches.max_file_bytes" in big.value.message
    file_id = _upload(client, [_line("a", "b")])
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/completions",  # type: ignore[arg-type]
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")


def test_tenants_do_not_see_each_other(gw: Running) -> None:
    alice, bob = _client(gw, "alice"), _client(gw, "bob")
    file_id = _upload(alice, [_line("a", "for alice")])
    batch = alice.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
    for call in (lambda: bob.files.retrieve(file_id), lambda: bob.files.content(file_id),
                 lambda: bob.files.delete(file_id), lambda: bob.batches.retrieve(batch.id),
                 lambda: bob.batches.cancel(batch.id),
                 lambda: bob.batches.create(input_file_id=file_id,
                                            endpoint="/v1/chat/completions",
                                            completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert file_id not in [f.id for f in bob.files.list()]
    assert batch.id not in [b.id for b in bob.batches.list()]
    done = _wait(alice, batch.id)
    assert done.status == "completed"
    out = _records(alice, done.output_file_id)
    assert "for alice" in out[0]["response"]["body"]["choices"][0]["message"]["content"]


def test_cancel_keeps_partial_output(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"ttft_s": 0.05})
    try:
        client = _client(gw)
        file_id = _upload(client, [_line(f"c{i}", f"slow {i}") for i in range(400)])
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        deadline = time.monotonic() + 30
        while client.batches.retrieve(batch.id).request_counts.completed < 8:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.batches.cancel(batch.id).status == "cancelling"
        done = _wait(client, batch.id)
        assert done.status == "cancelled"
        out = _records(client, done.output_file_id)
        assert 8 <= len(out) < 400
        assert len(out) == done.request_counts.completed  # type: ignore[union-attr]
    finally:
        upstream.script(default={})


def test_embeddings_batch_and_a_thousand_lines(gw: Running, upstream: FakeUpstreamClient
                                               ) -> None:
    upstream.reset()
    client = _client(gw)
    n = 1000
    file_id = _upload(client, [_line(f"r{i}", f"number {i}") for i in range(n)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    done = _wait(client, batch.id, within_s=300)
    assert done.status == "completed" and done.request_counts.completed == n  # type: ignore[union-attr]
    out = _records(client, done.output_file_id)
    seen = Counter(r["custom_id"] for r in out)
    assert seen == Counter(f"r{i}" for i in range(n))
    for r in out:
        i = r["custom_id"][1:]
        assert f"number {i}" in r["response"]["body"]["choices"][0]["message"]["content"]
    assert upstream.calls()["calls"] == n

    emb = json.dumps({"custom_id": "e1", "method": "POST", "url": "/v1/embeddings",
                      "body": {"model": "emb", "input": "hello"}})
    eb = client.batches.create(input_file_id=_upload(client, [emb]), endpoint="/v1/embeddings",
                               completion_window="24h")
    edone = _wait(client, eb.id)
    rec = (_records(client, edone.output_file_id) + _records(client, edone.error_file_id))[0]
    assert rec["custom_id"] == "e1" and rec["response"]["status_code"] == 200, rec
    assert rec["response"]["body"]["object"] == "list"


def test_gateway_restart_mid_batch_repeats_nothing(upstream: FakeUpstreamClient,
                                                   tmp_path: Path) -> None:
    upstream.reset()
    upstream.script(default={"ttft_s": 0.02})
    n = 300
    config = _config(upstream)
    try:
        with run_gateway(config, tmp_path) as gw:
            client = _client(gw)
            file_id = _upload(client, [_line(f"k{i}", f"restart {i}") for i in range(n)])
            batch = client.batches.create(input_file_id=file_id,
                                          endpoint="/v1/chat/completions",
                                          completion_window="24h")
            deadline = time.monotonic() + 60
            while client.batches.retrieve(batch.id).request_counts.completed < 40:  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.05)
        mid = upstream.calls()["calls"]
        assert mid < n  # it really stopped mid-batch
        with run_gateway(config, tmp_path) as gw:
            client = _client(gw)
            done = _wait(client, batch.id, within_s=120)
            assert done.status == "completed", done
            out = _records(client, done.output_file_id)
        assert Counter(r["custom_id"] for r in out) == Counter(f"k{i}" for i in range(n))
        # Lines cut in flight by the stop may run again; a finished one never does.
        assert n <= upstream.calls()["calls"] <= n + 4
    finally:
        upstream.script(default={})


def test_upload_without_auth_is_refused(gw: Running) -> None:
    r = httpx.get(gw.url + "/v1/files")
    assert r.status_code == 401


def test_batch_on_postgres_across_two_replicas(upstream: FakeUpstreamClient, pg_url: str,
                                               tmp_path: Path) -> None:
    """Shared store: a file uploaded through one replica runs as a batch and
    downloads through another."""
    upstream.reset()
    config = _config(upstream, store={"kind": "postgres", "url": pg_url})
    with run_gateway(config, tmp_path / "a") as a, run_gateway(config, tmp_path / "b") as b:
        ca, cb = _client(a), _client(b)
        lines = [_line(f"p{i}", f"pg {i}") for i in range(50)] + ["oops"]
        batch = ca.batches.create(input_file_id=_upload(ca, lines),
                                  endpoint="/v1/chat/completions", completion_window="24h")
        done = _wait(cb, batch.id)
        assert done.status == "completed", done
        out = _records(cb, done.output_file_id)
        assert Counter(r["custom_id"] for r in out) == Counter(f"p{i}" for i in range(50))
        assert [r["error"]["code"] for r in _records(cb, done.error_file_id)] == [
            "invalid_json_line"]
    assert upstream.calls()["calls"] == 50


def test_line_and_file_limits(upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.reset()
    config = _config(upstream, batches={"max_lines": 3, "max_line_bytes": 300})
    with run_gateway(config, tmp_path) as gw:
        client = _client(gw)
        long_line = _line("long", "y" * 400)
        b = client.batches.create(input_file_id=_upload(client, [_line("a", "ok"), long_line]),
                                  endpoint="/v1/chat/completions", completion_window="24h")
        done = _wait(client, b.id)
        assert done.status == "completed"
        [err] = _records(client, done.error_file_id)
        assert err["error"]["code"] == "line_too_long" and err["error"]["line"] == 2

        many = client.batches.create(
            input_file_id=_upload(client, [_line(f"m{i}", "x") for i in range(4)]),
            endpoint="/v1/chat/completions", completion_window="24h")
        failed = _wait(client, many.id)
        assert failed.status == "failed" and failed.errors is not None
        assert failed.errors.data is not None and failed.errors.data[0].code == "too_many_lines"


def test_lines_run_as_the_creating_key_and_stop_when_it_is_revoked(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    """The first line is slow (2 s at the upstream): the key is revoked
    meanwhile, so the second line, started after it, answers 401."""
    upstream.reset()
    config = _config(upstream, batches={"concurrency": 1})
    with run_gateway(config, tmp_path) as gw:
        carol = _client(gw, "carol")
        upstream.script(queue=[{"ttft_s": 2.0}])
        b = carol.batches.create(
            input_file_id=_upload(carol, [_line("first", "slow"), _line("second", "x")]),
            endpoint="/v1/chat/completions", completion_window="24h")
        keys = gw.on_server(gw.services.store.list_keys())
        gw.on_server(gw.services.store.revoke_key(next(k for k in keys if k.tenant == "carol").id))
        gw.services.auth.forget_keys()
        deadline = time.monotonic() + 60
        while (done := gw.on_server(gw.services.batch_store.get_batch(b.id))).status != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert done.tenant == "carol"
        records: list[dict[str, Any]] = []
        for fid in (done.output_file_id, done.error_file_id):
            if fid:
                data = gw.on_server(_read(gw, fid))
                records += [json.loads(x) for x in data.splitlines() if x]
        second = next(r for r in records if r["custom_id"] == "second")
        assert second["response"]["status_code"] == 401
    upstream.script(default={})


async def _read(gw: Running, file_id: str) -> bytes:
    return b"".join([p async for p in gw.services.batch_store.read_file(file_id)])


def test_files_and_batches_routes_are_rate_limited_and_carry_a_request_id(gw: Running) -> None:
    """Like RAG and admin routes: the key's rpm counts these requests too."""
    secret = "sk-sw-" + uuid.uuid4().hex
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_" + uuid.uuid4().hex[:8], name="limited", tenant="limited",
        key_hash=hash_key(secret), prefix=secret[:10], rpm=2, created_at=time.time())))
    auth = {"authorization": f"Bearer {secret}"}
    got = [httpx.get(gw.url + path, headers=auth)
           for path in ("/v1/files", "/v1/batches", "/v1/files")]
    assert [r.status_code for r in got] == [200, 200, 429], [r.text for r in got]
    assert all(r.headers.get("x-request-id") for r in got)
    assert got[2].json()["error"]["code"] == "rate_limit_exceeded"
