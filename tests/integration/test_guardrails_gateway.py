"""Guardrails through the real gateway: the official openai SDK in front, the
fake upstream behind (which shows the body it really received and echoes the
last user message back), trace records from the real store, metrics from
/metrics.

Policies: model ``m`` masks emails and phone numbers, blocks cards and
secrets, flags IP addresses on input and output; model ``plain`` has no
policy (trace redaction still applies); key ``strict`` blocks emails too;
model ``mod`` is moderated by model ``judge`` (scripted answers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)

MASTER = "sk-master-guardrails-test"
EMAIL = "ana.lopez@example.com"
PHONE = "+1 415-555-2671"
CARD = "4111 1111 1111 1111"
GITHUB = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def _config(upstream: FakeUpstreamClient) -> dict[str, Any]:
    fake = {"type": "openai", "base_url": upstream.base_url + "/v1"}
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"f": fake},
        "models": {**{name: {"provider": "f", "model": "fake-1"}
                      for name in ("m", "plain", "mod", "judge", "outguard")},
                   "emb": {"provider": "f", "model": "fake-emb", "kind": "embedding"}},
        "guardrails": {
            "models": {
                "m": {"input": {"email": "mask", "phone": "mask", "credit_card": "block",
                                "secret": "block", "ip": "flag"},
                      "output": {"ip": "flag"}},
                "outguard": {"output": {"email": "mask", "credit_card": "block"}},
                "mod": {"moderate": True},
                "emb": {"input": {"email": "mask", "credit_card": "block"}},
            },
            "keys": {"strict": {"input": {"email": "block"}}},
            "moderate": False,
            "moderation": {"model": "judge", "timeout_s": 5},
        },
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream), tmp_path_factory.mktemp("guard")) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(upstream: FakeUpstreamClient) -> None:
    upstream.reset()
    upstream.script(default={})


def sdk(gw: Running, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def record(gw: Running, trace_id: str) -> dict[str, Any]:
    for r in gw.traces(200):
        if r["trace_id"] == trace_id:
            return r
    raise AssertionError(f"no trace record {trace_id}")


def last_upstream_text(upstream: FakeUpstreamClient) -> str:
    body = upstream.calls()["requests"][-1]
    return str(body["messages"][-1]["content"])


def findings(rec: dict[str, Any]) -> list[dict[str, Any]]:
    route = rec["route"]
    if isinstance(route, str):
        import json
        route = json.loads(route)
    return list(route["guardrails"]["findings"])


def metric(gw: Running, detector: str, action: str, direction: str) -> float:
    text = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}).text
    needle = (f'seawall_guardrail_findings_total{{action="{action}",detector="{detector}",'
              f'direction="{direction}"}}')
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line.split()[-1])
    return 0.0


def test_upstream_sees_masked_text_and_client_gets_it_restored(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    prompt = f"Write to {EMAIL} or call {PHONE}, then {EMAIL} again."
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": prompt}])
    seen = last_upstream_text(upstream)
    assert EMAIL not in seen and PHONE not in seen
    assert seen == "Write to <EMAIL_1> or call <PHONE_1>, then <EMAIL_1> again."
    assert raw.parse().choices[0].message.content == prompt  # the fake echoes: restored
    rec = record(gw, raw.headers["x-request-id"])
    assert EMAIL not in str(rec["input"]) and EMAIL not in str(rec["output"])
    assert {"direction": "input", "detector": "email", "action": "mask", "count": 2} in \
        findings(rec)


def test_streamed_answer_is_restored(gw: Running, upstream: FakeUpstreamClient) -> None:
    # (Placeholders split inside a chunk boundary: tests/unit/test_guardrails_masking.py.)
    stream = sdk(gw).chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": f"Mail {EMAIL} today"}])
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == f"Mail {EMAIL} today"
    assert EMAIL not in last_upstream_text(upstream)
    assert len(pieces) > 2  # still streamed, not gathered into one chunk


def test_a_long_prompt_is_masked_and_restored_off_the_event_loop(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    # 60 KB: past guardrails.thread_chars, so scan, copy and record redaction run in threads.
    prompt = "lorem ipsum " * 5000 + f"reply to {EMAIL}"
    upstream.script(default={"text": "ok <EMAIL_1>"})
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": prompt}])
    assert raw.parse().choices[0].message.content == f"ok {EMAIL}"
    seen = last_upstream_text(upstream)
    assert seen.endswith("reply to <EMAIL_1>") and len(seen) == len(prompt) - len(EMAIL) + 9
    rec = record(gw, raw.headers["x-request-id"])
    assert EMAIL not in str(rec["input"]) and EMAIL not in str(rec["output"])


def test_block_is_a_400_naming_the_detector_without_the_value(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    before = upstream.calls()["calls"]
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gw).chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"My card is {CARD}, thanks"}])
    body = err.value.body
    assert isinstance(body, dict)
    assert body["code"] == "guardrail_blocked" and "credit_card" in body["message"]
    assert CARD not in str(body) and "4111" not in str(body)
    assert upstream.calls()["calls"] == before  # never sent upstream
    rec = [r for r in gw.traces(20) if r["error_code"] == "guardrail_blocked"][0]
    assert "4111" not in str(rec["input"]) and "[REDACTED:credit_card]" in str(rec["input"])
    assert metric(gw, "credit_card", "block", "input") >= 1


def test_flag_shows_in_the_record_and_the_metric(gw: Running) -> None:
    before = metric(gw, "ip", "flag", "input")
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "Is 203.0.113.9 reachable?"}])
    assert raw.parse().choices[0].message.content == "Is 203.0.113.9 reachable?"  # flag only
    rec = record(gw, raw.headers["x-request-id"])
    found = findings(rec)
    assert {"direction": "input", "detector": "ip", "action": "flag", "count": 1} in found
    assert {"direction": "output", "detector": "ip", "action": "flag", "count": 1} in found
    assert "203.0.113.9" not in str(rec["input"]) + str(rec["output"])  # records redact
    assert metric(gw, "ip", "flag", "input") == before + 1


def test_records_are_redacted_without_any_policy(gw: Running, upstream: FakeUpstreamClient
                                                 ) -> None:
    text = f"Card {CARD}, mail {EMAIL}, token {GITHUB}"
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="plain", messages=[{"role": "user", "content": text}])
    assert raw.parse().choices[0].message.content == text  # nothing changed for the client
    assert last_upstream_text(upstream) == text
    rec = record(gw, raw.headers["x-request-id"])
    stored = str(rec["input"]) + str(rec["output"])
    for value in (CARD, EMAIL, GITHUB):
        assert value not in stored
    for marker in ("[REDACTED:credit_card]", "[REDACTED:email]", "[REDACTED:secret]"):
        assert marker in stored


def test_per_key_policy_wins_over_the_model(gw: Running) -> None:
    secret = f"sk-sw-strict-{time.monotonic_ns()}"
    gw.on_server(gw.services.store.create_key(ApiKey(
        id=f"key_strict_{time.monotonic_ns()}", name="strict", tenant="t1",
        key_hash=hash_key(secret), prefix=secret[:10], rpm=None, created_at=time.time())))
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gw, secret).chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"write {EMAIL}"}])
    assert "email" in str(err.value) and EMAIL not in str(err.value)


def test_output_mask_and_block(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": f"Contact {EMAIL} now."})
    for stream in (False, True):
        if stream:
            chunks = sdk(gw).chat.completions.create(
                model="outguard", stream=True, messages=[{"role": "user", "content": "who?"}])
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = sdk(gw).chat.completions.create(
                model="outguard", messages=[{"role": "user", "content": "who?"}]
            ).choices[0].message.content or ""
        assert text == "Contact [REDACTED:email] now."
    upstream.script(default={"text": f"Your card: {CARD}"})
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gw).chat.completions.create(model="outguard",
                                        messages=[{"role": "user", "content": "card?"}])
    assert "credit_card" in str(err.value) and "4111" not in str(err.value)
    # Streamed: the answer is held until scanned, so the block comes before any of it.
    with pytest.raises(openai.BadRequestError) as err2:  # nothing was sent: a real 400
        for chunk in sdk(gw).chat.completions.create(
                model="outguard", stream=True, messages=[{"role": "user", "content": "card?"}]):
            assert not (chunk.choices and chunk.choices[0].delta.content)
    assert "credit_card" in str(err2.value) and "4111" not in str(err2.value)


def test_moderation_model_blocks_and_passes(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(queue=[{"text": "unsafe\nS2"}, {"text": "safe"}, {}])
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gw).chat.completions.create(model="mod",
                                        messages=[{"role": "user", "content": "how to x"}])
    assert "moderation" in str(err.value) and "S2" in str(err.value)
    answer = sdk(gw).chat.completions.create(
        model="mod", messages=[{"role": "user", "content": "hello there"}])
    assert answer.choices[0].message.content == "hello there"
    assert upstream.calls()["calls"] == 3  # two verdicts, one answer


def test_moderation_timeout_fails_open(gw: Running, upstream: FakeUpstreamClient) -> None:
    # The judge hangs past its timeout: fail_open (the default) serves the request.
    moderation = gw.services.moderation
    assert moderation is not None
    configured = moderation.settings
    moderation.settings = configured.model_copy(update={"timeout_s": 0.3})
    try:
        upstream.script(queue=[{"hang": True}, {}])
        raw = sdk(gw).chat.completions.with_raw_response.create(
            model="mod", messages=[{"role": "user", "content": "hello again"}])
        assert raw.parse().choices[0].message.content == "hello again"
        rec = record(gw, raw.headers["x-request-id"])
        route = rec["route"] if isinstance(rec["route"], dict) else __import__("json").loads(
            rec["route"])
        assert route["guardrails"]["moderation"] == "error"
    finally:
        moderation.settings = configured


def test_anthropic_messages_are_masked_and_restored(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    import anthropic
    client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0)
    text = f"Note {EMAIL} down"
    msg = client.messages.create(model="m", max_tokens=64,
                                 messages=[{"role": "user", "content": text}])
    assert msg.content[0].text == text  # type: ignore[union-attr]
    assert last_upstream_text(upstream) == "Note <EMAIL_1> down"
    with client.messages.stream(model="m", max_tokens=64,
                                messages=[{"role": "user", "content": text}]) as stream:
        assert "".join(stream.text_stream) == text
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="m", max_tokens=64,
                               messages=[{"role": "user", "content": f"card {CARD}"}])
    assert "credit_card" in str(err.value) and "4111" not in str(err.value)


def test_responses_api_is_masked_and_restored(gw: Running, upstream: FakeUpstreamClient
                                              ) -> None:
    resp = sdk(gw).responses.create(model="m", input=f"Save {EMAIL} please", store=False)
    assert resp.output_text == f"Save {EMAIL} please"
    assert last_upstream_text(upstream) == "Save <EMAIL_1> please"


def test_embeddings_inputs_are_guarded(gw: Running, upstream: FakeUpstreamClient) -> None:
    client = sdk(gw)
    before = upstream.calls()["calls"]
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="emb", input=["fine", f"card {CARD}"])
    assert "credit_card" in str(err.value) and upstream.calls()["calls"] == before
    out = client.embeddings.create(model="emb", input=["fine", f"mail {EMAIL}"])
    assert len(out.data) == 2
    assert upstream.calls()["requests"][-1]["input"] == ["fine", "mail <EMAIL_1>"]


def test_a_text_longer_than_the_scan_limit_is_refused_not_passed_unscanned(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    before = upstream.calls()["calls"]
    huge = "word " * 220_000  # 1.1 M characters > guardrails.max_scan_chars (1 M)
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {MASTER}"},
                   json={"model": "m", "messages": [{"role": "user", "content": huge}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "guardrail_scan_limit"
    assert upstream.calls()["calls"] == before


def test_moderation_endpoint_flags_and_fail_closed(
        upstream: FakeUpstreamClient, tmp_path: Any) -> None:
    """An OpenAI-compatible /v1/moderations endpoint on loopback: flagged inputs
    are recorded (action flag); when it is down and fail_open is false, 503."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.servers import ServerThread

    seen: list[dict[str, Any]] = []

    async def moderations(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        bad = "attack" in body["input"]
        return JSONResponse({"results": [{"flagged": bad,
                                          "categories": {"violence": bad, "hate": False}}]})

    mod_server = ServerThread(Starlette(routes=[Route("/v1/moderations", moderations,
                                                      methods=["POST"])])).start()
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"m": {"provider": "f", "model": "fake-1"}},
        "guardrails": {"moderation": {"url": mod_server.url + "/v1/moderations",
                                      "api_key": "mod-key", "action": "flag",
                                      "fail_open": False, "timeout_s": 2}},
    }
    try:
        with run_gateway(config, tmp_path) as gw:
            before = metric(gw, "moderation", "flag", "input")
            raw = sdk(gw).chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "plan the attack"}])
            assert raw.parse().choices[0].message.content == "plan the attack"  # flag only
            assert seen[-1] == {"body": {"input": "plan the attack"}, "auth": "Bearer mod-key"}
            rec = record(gw, raw.headers["x-request-id"])
            route = rec["route"] if isinstance(rec["route"], dict) else __import__(
                "json").loads(rec["route"])
            assert route["guardrails"]["moderation"] == "flagged"
            assert route["guardrails"]["categories"] == ["violence"]
            assert metric(gw, "moderation", "flag", "input") == before + 1
            mod_server.stop()
            with pytest.raises(openai.InternalServerError) as err:
                sdk(gw).chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hello"}])
            assert err.value.status_code == 503 and "moderation" in str(err.value)
    finally:
        mod_server.stop()


def test_the_cache_keys_on_and_stores_masked_text(
        upstream: FakeUpstreamClient, tmp_path: Any) -> None:
    """Two prompts that differ only in a masked email share one cache entry,
    and each client gets its own email back; the entry holds no email."""
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": True, "semantic": {"enabled": False}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"m": {"provider": "f", "model": "fake-1"}},
        "guardrails": {"input": {"email": "mask"}},
    }
    with run_gateway(config, tmp_path) as gw:
        before = upstream.calls()["calls"]
        answers = []
        for email in ("ana@example.com", "bob@example.org"):
            answers.append(sdk(gw).chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"greet {email}"}]
            ).choices[0].message.content)
            gw.on_server(gw.services.cache.settle())
        assert answers == ["greet ana@example.com", "greet bob@example.org"]
        assert upstream.calls()["calls"] == before + 1  # the second was a cache hit
        import sqlite3
        db = sqlite3.connect(gw.services.settings.cache_path)  # the cache's own file
        try:
            rows = db.execute("SELECT text, completion FROM cache_entries").fetchall()
        finally:
            db.close()
        stored = " ".join(str(t) + bytes(c).decode("utf-8", "replace") for t, c in rows)
        assert len(rows) == 1 and "example." not in stored and "<EMAIL_1>" in stored
