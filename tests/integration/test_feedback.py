"""Feedback on answers (``POST /v1/feedback``) and the whole trace record
(``GET /admin/traces/{id}``, ``seawall traces show``): the official openai
SDK asks a real gateway in front of the fake upstream, httpx rates the
answer, on SQLite and on Postgres."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from click.testing import CliRunner

from seawall.cli import main as cli
from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-feedback"


def _config(upstream: FakeUpstreamClient, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}},
        "feedback": {"max_comment_chars": 100, "max_categories": 3, "max_category_chars": 10,
                     "max_user_chars": 20},
        **extra,
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream), tmp_path_factory.mktemp("feedback")) as running:
        yield running


def _secret(gw: Running, tenant: str) -> str:
    secret = "sk-sw-" + uuid.uuid4().hex
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_" + uuid.uuid4().hex[:8], name=tenant, tenant=tenant,
        key_hash=hash_key(secret), prefix=secret[:10], rpm=None, created_at=time.time())))
    return secret


def _answer(gw: Running, secret: str, text: str = "how tall is the tower") -> tuple[str, str]:
    """(x-request-id, answer text) of one chat completion."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-x", messages=[{"role": "user", "content": text}])
    return raw.headers["x-request-id"], raw.parse().choices[0].message.content or ""


def _rate(gw: Running, secret: str, **body: Any) -> httpx.Response:
    return httpx.post(gw.url + "/v1/feedback", json=body,
                      headers={"authorization": f"Bearer {secret}"}, timeout=30)


def _trace(gw: Running, request_id: str, secret: str = MASTER) -> httpx.Response:
    return httpx.get(f"{gw.url}/admin/traces/{request_id}",
                     headers={"authorization": f"Bearer {secret}"}, timeout=30)


def _counted(gw: Running, sign: str) -> float:
    text = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"},
                     timeout=30).text
    m = re.search(rf'^seawall_feedback_total{{score_sign="{sign}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _cli_show(data_dir: Path, request_id: str, **store: Any) -> dict[str, Any]:
    conf = data_dir.parent / f"cli-{uuid.uuid4().hex[:6]}.yaml"
    conf.write_text(yaml.safe_dump({"data_dir": str(data_dir), **store}))
    r = CliRunner().invoke(cli, ["traces", "show", request_id, "-c", str(conf)])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _whole_flow(gw: Running, data_dir: Path, **store: Any) -> None:
    """Rate at once (the record may not be stored yet), rate again, another
    user, another tenant; then the record over HTTP and the CLI."""
    alice, bob = _secret(gw, "alice"), _secret(gw, "bob")
    rid, text = _answer(gw, alice)
    positive, negative = _counted(gw, "positive"), _counted(gw, "negative")
    r = _rate(gw, alice, request_id=rid, score=1, comment="spot on", categories=["facts"],
              user="u1")
    assert r.status_code == 200, r.text
    assert r.json()["replaced"] is False and r.json()["trace_id"] == rid
    # The same user again: replaces; counted once.
    r = _rate(gw, alice, request_id=rid, score=-1, comment="wrong after all", user="u1")
    assert r.status_code == 200 and r.json()["replaced"] is True
    assert _rate(gw, alice, request_id=rid, score=0.5, user="u2").status_code == 200
    assert _counted(gw, "positive") == positive + 2  # u1's first, u2's
    assert _counted(gw, "negative") == negative  # u1's replacement is not a new rating
    # Bob's key cannot rate (or learn of) alice's answer; nor the master key (tenant default).
    for secret in (bob, MASTER):
        r = _rate(gw, secret, request_id=rid, score=-1, user="u1")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    doc = _trace(gw, rid).json()
    assert doc["trace_id"] == rid and doc["tenant"] == "alice" and doc["output"] == text
    assert doc["input"][-1]["content"] == "how tall is the tower" and doc["stream"] is False
    assert doc["attempts"][0]["outcome"] == "ok" and doc["scores"] == []
    fb = {f["user"]: f for f in doc["feedback"]}
    assert set(fb) == {"u1", "u2"}
    assert (fb["u1"]["score"], fb["u1"]["comment"], fb["u1"]["categories"]) == (
        -1.0, "wrong after all", [])
    assert fb["u2"]["score"] == 0.5 and fb["u2"]["tenant"] == "alice"
    assert _cli_show(data_dir, rid, **store) == doc
    # Only the master key (or a tenant_admin key of the tenant) reads whole
    # records; an app key is refused with the scope it lacks (403).
    denied = _trace(gw, rid, alice)
    assert denied.status_code == 403 and "'admin:traces'" in denied.text
    assert _trace(gw, "0" * 32).status_code == 404


def test_feedback_and_trace_record(gw: Running, tmp_path: Path) -> None:
    _whole_flow(gw, Path(gw.services.settings.data_dir))


def test_unknown_id_is_404_after_a_bounded_wait(gw: Running) -> None:
    alice = _secret(gw, "alice")
    t0 = time.monotonic()
    r = _rate(gw, alice, request_id="f" * 32, score=1)
    assert r.status_code == 404 and r.json()["error"]["param"] == "request_id"
    assert time.monotonic() - t0 < 20  # feedback.trace_wait_s (2 s), never unbounded


def test_a_responses_api_id_is_rated(gw: Running) -> None:
    alice = _secret(gw, "alice")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=alice, max_retries=0)
    resp = client.responses.create(model="gpt-x", input="hello there")
    r = _rate(gw, alice, request_id=resp.id, score=-1, categories=["tone"])
    assert r.status_code == 200, r.text
    doc = _trace(gw, resp.id).json()
    assert doc["endpoint"] == "responses" and doc["feedback"][0]["categories"] == ["tone"]


@pytest.mark.parametrize(("body", "param"), [
    ({"score": 2}, "score"),
    ({"score": -1.5}, "score"),
    ({"score": True}, None),
    ({"score": "1"}, None),
    ({"score": 1, "comment": "x" * 101}, "comment"),
    ({"score": 1, "categories": ["a", "b", "c", "d"]}, "categories"),
    ({"score": 1, "categories": ["x" * 11]}, "categories"),
    ({"score": 1, "categories": [""]}, "categories"),
    ({"score": 1, "user": "u" * 21}, "user"),
    ({"score": 1, "user": ""}, "user"),
    ({"score": 1, "extra": 1}, None),
    ({}, None),
])
def test_limits_are_400s(gw: Running, body: dict[str, Any], param: str | None) -> None:
    alice = _secret(gw, "alice")
    rid, _ = _answer(gw, alice)
    r = _rate(gw, alice, **({"request_id": rid} | body if body else {}))
    assert r.status_code == 400, r.text
    if param is not None:
        assert r.json()["error"]["param"] == param
    gw.on_server(gw.services.writer.flush())  # nothing waited for the record here
    assert _trace(gw, rid).json()["feedback"] == []


def test_malformed_and_oversized_bodies(gw: Running) -> None:
    alice = _secret(gw, "alice")
    h = {"authorization": f"Bearer {alice}", "content-type": "application/json"}
    assert httpx.post(gw.url + "/v1/feedback", content=b"{not json", headers=h).status_code == 400
    assert httpx.post(gw.url + "/v1/feedback", content=b"[1]", headers=h).status_code == 400
    big = json.dumps({"request_id": "x", "score": 1, "comment": "y" * 300_000}).encode()
    assert httpx.post(gw.url + "/v1/feedback", content=big, headers=h).status_code == 413
    r = _rate(gw, alice, request_id="r" * 201, score=1)
    assert r.status_code == 400 and r.json()["error"]["param"] == "request_id"
    assert httpx.post(gw.url + "/v1/feedback", json={}, timeout=30).status_code == 401


def test_on_postgres(upstream: FakeUpstreamClient, pg_url: str, tmp_path: Path) -> None:
    store = {"store": {"kind": "postgres", "url": pg_url}}
    with run_gateway(_config(upstream, **store), tmp_path) as running:
        _whole_flow(running, tmp_path / "data", **store)
