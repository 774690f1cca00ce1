"""The verifier model (``cache.semantic.verify.model``) through the real gateway: the
official openai SDK in front, the fake upstream behind playing both the answering model
and the verifier (its scripted replies are the verdicts).

Precision first: only a "yes" serves a semantic candidate; a "no", an answer that is
neither, or no answer in time refuses it, and the record says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(60)

MASTER = "sk-master-verifier-model"
STORED = "What is the best way to learn Python?"


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": True},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": True, "semantic": {
            "threshold": 0.8, "verify": {"model": "verifier", "timeout_s": 1.0}}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {
            "m": {"provider": "f", "model": "fake-1"},
            "unverified": {"provider": "f", "model": "fake-1", "cache": {"verify": "off"}},
            "verifier": {"provider": "f", "model": "fake-judge", "cache": {"enabled": False}},
        },
    }
    with run_gateway(config, tmp_path_factory.mktemp("verifier-model")) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.reset()
    upstream.script(default={})
    httpx.post(gw.url + "/admin/cache/purge", json={"all": True},
               headers={"authorization": f"Bearer {MASTER}"}).raise_for_status()


def ask(gw: Running, text: str, model: str = "m") -> Any:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=10)
    try:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}])
    finally:
        gw.on_server(gw.services.cache.settle())


def guard_of(gw: Running, response: Any) -> str | None:
    trace_id = response.headers["x-request-id"]
    record = next(r for r in gw.traces(200) if r["trace_id"] == trace_id)
    guard: str | None = record["cache_guard"]
    return guard


def test_model_refuses_a_near_miss_and_serves_a_paraphrase(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    first = ask(gw, STORED)
    assert upstream.calls()["calls"] == 1

    # The rules pass "fastest" for "best"; the verifier model says no: a miss, answered
    # upstream (the verifier's call + the answer), and the record says who refused.
    upstream.script(queue=[{"text": "No"}])
    near = ask(gw, "What is the fastest way to learn Python?")
    assert near.headers["x-seawall-cache"] == "miss"
    assert guard_of(gw, near) == "model"
    seen = upstream.calls()
    assert seen["calls"] == 3
    verdict_request = next(r for r in seen["requests"] if r.get("model") == "fake-judge")
    asked = verdict_request["messages"][-1]["content"]
    assert STORED in asked and "fastest" in asked
    assert verdict_request["max_tokens"] <= 3 and verdict_request["temperature"] == 0
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'seawall_cache_guard_rejections_total{check="model",model="m"}' in metrics

    # A paraphrase, and the verifier says yes: served from the cache, one small call.
    upstream.script(queue=[{"text": "Yes."}])
    para = ask(gw, "What's the best way to learn Python?")
    assert para.headers["x-seawall-cache"] == "semantic-hit"
    assert upstream.calls()["calls"] == 4
    assert para.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_no_clear_yes_or_no_answer_in_time_refuses(gw: Running,
                                                   upstream: FakeUpstreamClient) -> None:
    ask(gw, STORED)
    # The fake echoes the prompt when unscripted: neither yes nor no.
    unclear = ask(gw, "What's the best way to learn Python?")
    assert unclear.headers["x-seawall-cache"] == "miss"
    assert guard_of(gw, unclear) == "model-unclear"
    # A verifier slower than timeout_s (1 s): refused, never served unverified.
    upstream.script(queue=[{"ttft_s": 5, "text": "yes"}])
    slow = ask(gw, "Which is the best way to learn Python?")
    assert slow.headers["x-seawall-cache"] == "miss"
    assert guard_of(gw, slow) == "model-timeout"


def test_verify_off_for_a_model_skips_the_verifier_model(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    ask(gw, STORED, model="unverified")
    hit = ask(gw, "What's the best way to learn Python?", model="unverified")
    assert hit.headers["x-seawall-cache"] == "semantic-hit"
    assert upstream.calls()["calls"] == 1  # the verifier model was never asked
