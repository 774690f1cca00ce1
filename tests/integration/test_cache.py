"""The response cache through the real gateway: the official openai SDK in
front, the fake upstream behind, the real SQLite store and vector index.

Each test asks the upstream how many calls it really got, so a cache that
answers wrongly (or not at all) fails here.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from seawall.app import create_app
from seawall.config import load_settings
from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_app, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(60)

MASTER = "sk-master-cache-test"


def _config(upstream: FakeUpstreamClient, **cache: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": True},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": True, "semantic": {"threshold": 0.8}, **cache},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {
            "m": {"provider": "f", "model": "fake-1",
                  "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}},
            "uncached": {"provider": "f", "model": "fake-1", "cache": {"enabled": False}},
            "exact-only": {"provider": "f", "model": "fake-1", "cache": {"semantic": False}},
            "unverified": {"provider": "f", "model": "fake-1", "cache": {"verify": "off"}},
        },
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream), tmp_path_factory.mktemp("cache")) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(gw: Running, upstream: FakeUpstreamClient) -> None:
    """Every test starts with an empty cache and a quick, well-behaved upstream."""
    upstream.reset()
    upstream.script(default={})
    httpx.post(gw.url + "/admin/cache/purge", json={"all": True},
               headers={"authorization": f"Bearer {MASTER}"}).raise_for_status()


def sdk(gw: Running, key: str = MASTER, **headers: str) -> openai.OpenAI:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10,
                           default_headers=headers or None)
    client._gw = gw  # type: ignore[attr-defined]
    return client


def settle(gw: Running) -> None:
    """Answers are stored off the request path: wait until they are."""
    gw.on_server(gw.services.cache.settle())


def ask(client: openai.OpenAI, text: str, model: str = "m", **kw: Any) -> Any:
    gw: Running = client._gw  # type: ignore[attr-defined]
    try:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}], **kw)
    finally:
        settle(gw)


def calls(upstream: FakeUpstreamClient) -> int:
    return int(upstream.calls()["calls"])


def record(gw: Running, trace_id: str) -> dict[str, Any]:
    for r in gw.traces(200):
        if r["trace_id"] == trace_id:
            return r
    raise AssertionError(f"no trace record {trace_id}")


def make_key(gw: Running, tenant: str, **extra: Any) -> str:
    secret = f"sk-sw-{tenant}-{time.monotonic_ns()}"
    key = ApiKey(id=f"key_{tenant}_{time.monotonic_ns()}", name=tenant, tenant=tenant,
                 key_hash=hash_key(secret), prefix=secret[:10], rpm=None,
                 created_at=time.time(), **extra)
    gw.on_server(gw.services.store.create_key(key))
    return secret


def test_exact_hit_answers_without_the_upstream(gw: Running, upstream: FakeUpstreamClient
                                                ) -> None:
    client = sdk(gw)
    first = ask(client, "What is the capital of France?")
    assert first.headers["x-seawall-cache"] == "miss"
    second = ask(client, "What is the capital of France?")
    assert second.headers["x-seawall-cache"] == "hit"
    assert calls(upstream) == 1
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.id != a.id  # every response has its own id
    assert b.usage.total_tokens == a.usage.total_tokens
    assert int(second.headers["age"]) >= 0
    rec = record(gw, second.headers["x-request-id"])
    assert rec["cache"] == "hit" and rec["cache_entry"] is not None
    assert rec["prompt_tokens"] == 0 and rec["cost_usd"] == 0  # nothing spent upstream
    assert rec["saved_tokens"] == a.usage.total_tokens
    assert rec["saved_usd"] == pytest.approx(record(gw, first.headers["x-request-id"])["cost_usd"])
    assert rec["saved_usd"] > 0
    assert record(gw, first.headers["x-request-id"])["cache"] == "miss"


def test_streamed_answer_is_cached_and_a_hit_replays_as_sse(
        gw: Running, upstream: FakeUpstreamClient) -> None:
    client = sdk(gw)
    text = "Tell me about the river Seine"

    def stream() -> tuple[str, list[Any], str]:
        with client.chat.completions.with_streaming_response.create(
                model="m", messages=[{"role": "user", "content": text}], stream=True,
                stream_options={"include_usage": True}) as resp:
            chunks = list(resp.parse())
            status = resp.headers["x-seawall-cache"]
        settle(gw)
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return status, chunks, content

    status, chunks, content = stream()
    assert status == "miss" and content
    status2, chunks2, content2 = stream()
    assert status2 == "hit" and content2 == content
    assert calls(upstream) == 1
    assert chunks2[-1].usage is not None and chunks2[-1].usage.total_tokens > 0
    finish = [c.choices[0].finish_reason for c in chunks2 if c.choices]
    assert finish[-1] == "stop"
    # The plain request shares the streamed one's entry.
    plain = ask(client, text)
    assert plain.headers["x-seawall-cache"] == "hit"
    assert plain.parse().choices[0].message.content == content


def test_cut_stream_is_not_cached(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"disconnect_after_chunks": 2})
    client = sdk(gw)
    with pytest.raises(openai.APIError), client.chat.completions.create(
            model="m", stream=True,
            messages=[{"role": "user", "content": "one two three four five six"}]) as s:
        list(s)
    upstream.script(default={})
    again = ask(client, "one two three four five six")
    assert again.headers["x-seawall-cache"] == "miss"
    assert calls(upstream) == 2


def test_upstream_error_is_not_cached(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"error_status": 400})
    client = sdk(gw)
    with pytest.raises(openai.BadRequestError):
        ask(client, "a question the upstream refuses")
    upstream.script(default={})
    assert ask(client, "a question the upstream refuses").headers["x-seawall-cache"] == "miss"


def test_tenants_never_share_entries(gw: Running, upstream: FakeUpstreamClient) -> None:
    acme, globex = make_key(gw, "acme"), make_key(gw, "globex")
    assert ask(sdk(gw, acme), "What is our refund policy?").headers["x-seawall-cache"] == "miss"
    other = ask(sdk(gw, globex), "What is our refund policy?")
    assert other.headers["x-seawall-cache"] == "miss"  # same prompt, other tenant
    # Not semantically either.
    near = ask(sdk(gw, globex), "what is our refund policy")
    assert near.headers["x-seawall-cache"] in ("hit", "semantic-hit")  # its own entry
    assert record(gw, near.headers["x-request-id"])["tenant"] == "globex"
    assert ask(sdk(gw, acme), "What is our refund policy?").headers["x-seawall-cache"] == "hit"
    assert calls(upstream) == 2


def test_prompt_versions_never_share_entries(gw: Running, upstream: FakeUpstreamClient) -> None:
    v1, v2 = sdk(gw, **{"x-seawall-prompt-version": "v1"}), sdk(
        gw, **{"x-seawall-prompt-version": "v2"})
    assert ask(v1, "Summarise the release notes").headers["x-seawall-cache"] == "miss"
    assert ask(v2, "Summarise the release notes").headers["x-seawall-cache"] == "miss"
    assert ask(v1, "Summarise the release notes").headers["x-seawall-cache"] == "hit"
    # The version can also come in the body.
    body = ask(sdk(gw), "Summarise the release notes",
               extra_body={"seawall": {"prompt_version": "v2"}})
    assert body.headers["x-seawall-cache"] == "hit"
    assert calls(upstream) == 2


def test_semantic_hit_and_its_record(gw: Running, upstream: FakeUpstreamClient) -> None:
    client = sdk(gw)
    first = ask(client, "How do I reset my password?")
    near = ask(client, "how can I reset my password")
    assert near.headers["x-seawall-cache"] == "semantic-hit"
    assert calls(upstream) == 1
    assert near.parse().choices[0].message.content == first.parse().choices[0].message.content
    rec = record(gw, near.headers["x-request-id"])
    assert rec["cache"] == "semantic-hit" and 0.8 <= rec["cache_similarity"] <= 1.0
    # Other models (and exact-only ones) never match semantically.
    assert ask(client, "how can I reset my password", model="exact-only"
               ).headers["x-seawall-cache"] == "miss"


@pytest.mark.parametrize(("stored", "asked", "check"), [
    ("How do I enable 2FA on my account?", "How do I disable 2FA on my account?", None),
    ("Is 2GB of RAM enough for Windows 10?", "Is 1GB of RAM enough for Windows 10?", None),
    ("Why did George W. Bush invade Iraq?", "Why did George H.W. Bush invade Iraq?", None),
    ("Can I use my phone abroad?", "Can I not use my phone abroad?", None),
])
def test_guard_refuses_near_misses(gw: Running, upstream: FakeUpstreamClient, stored: str,
                                   asked: str, check: str | None) -> None:
    client = sdk(gw)
    ask(client, stored)
    answer = ask(client, asked)
    assert answer.headers["x-seawall-cache"] == "miss"
    assert calls(upstream) == 2
    # Close enough to be a candidate: the guard, not the threshold, refused it.
    assert record(gw, answer.headers["x-request-id"])["cache_guard"] is not None
    # The answer is the asked question's own (the fake echoes the question).
    assert "disable" in asked or answer.parse().choices[0].message.content != ask(
        client, stored).parse().choices[0].message.content
    text = httpx.get(gw.url + "/metrics").text
    assert "seawall_cache_guard_rejections_total" in text


@pytest.mark.parametrize(("stored", "asked", "check"), [
    ("The station was opened in 1911 and closed in 1962.",
     "The station was opened in 1962 and closed in 1911.", "swap"),
    ("Vera was born in Paris in 1901 and moved to Oslo at the age of 5.",
     "Vera was born in Oslo in 1901 and moved to Paris at the age of 5.", "swap"),
    ("Who is the father of Alice Smith?", "Whose father is Alice Smith?", "wh-role"),
    ("What are good calling cards from US to India?",
     "What are good calling cards from India to US?", "direction"),
    ("Did Google buy YouTube? When did Google do it?",
     "Did YouTube buy Google? When did YouTube do it?", "name-order"),
])
def test_verifier_refuses_swapped_roles(gw: Running, upstream: FakeUpstreamClient, stored: str,
                                        asked: str, check: str) -> None:
    """Same words, other roles: the guard passes these, the verifier refuses them, says
    which check did in the record and the metrics; a model with ``verify: off`` serves."""
    client = sdk(gw)
    ask(client, stored)
    answer = ask(client, asked)
    assert answer.headers["x-seawall-cache"] == "miss"
    assert calls(upstream) == 2
    assert record(gw, answer.headers["x-request-id"])["cache_guard"] == check
    text = httpx.get(gw.url + "/metrics").text
    assert f'seawall_cache_guard_rejections_total{{check="{check}",model="m"}}' in text
    assert "seawall_cache_verify_seconds_count" in text
    ask(client, stored, model="unverified")
    assert ask(client, asked, model="unverified").headers["x-seawall-cache"] == "semantic-hit"


@pytest.mark.parametrize(("stored", "asked"), [
    ("Katz was born in Sweden in 1947 and moved to New York at the age of 1.",
     "Katz was born in 1947 in Sweden and moved to New York at the age of 1."),
    ("What are the cheapest flights from Paris to Oslo?",
     "What are the cheapest flights to Oslo from Paris?"),
    ("What is the difference between Python and Java?",
     "What is the difference between Java and Python?"),
])
def test_verifier_serves_paraphrases(gw: Running, upstream: FakeUpstreamClient, stored: str,
                                     asked: str) -> None:
    client = sdk(gw)
    first = ask(client, stored)
    near = ask(client, asked)
    assert near.headers["x-seawall-cache"] == "semantic-hit"
    assert calls(upstream) == 1
    assert near.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert record(gw, near.headers["x-request-id"])["cache_guard"] is None


def test_coalescing_shares_one_upstream_call(gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"ttft_s": 0.4, "tokens_per_s": 50})
    text = "Explain the single flight pattern in five words please"

    async def one(stream: bool) -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0,
                                    timeout=10)
        msgs = [{"role": "user", "content": text}]
        if stream:
            async with client.chat.completions.with_streaming_response.create(
                    model="m", messages=msgs, stream=True) as resp:
                out = "".join([c.choices[0].delta.content or ""
                               async for c in await resp.parse() if c.choices])
                return resp.headers["x-seawall-cache"], out
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=msgs)
        return raw.headers["x-seawall-cache"], raw.parse().choices[0].message.content or ""

    async def main() -> list[tuple[str, str]]:
        first = asyncio.create_task(one(True))
        await asyncio.sleep(0.1)  # the leader is in flight
        rest = [asyncio.create_task(one(i % 2 == 0)) for i in range(5)]
        return [await first, *[await t for t in rest]]

    results = asyncio.run(main())
    assert calls(upstream) == 1
    statuses = sorted(s for s, _ in results)
    assert statuses == ["coalesced"] * 5 + ["miss"]
    assert len({out for _, out in results}) == 1 and results[0][1]
    # Once landed, it is an ordinary hit.
    assert ask(sdk(gw), text).headers["x-seawall-cache"] == "hit"


def test_request_controls(gw: Running, upstream: FakeUpstreamClient) -> None:
    client = sdk(gw)
    ask(client, "control question")
    refresh = ask(client, "control question", extra_headers={"cache-control": "no-cache"})
    assert refresh.headers["x-seawall-cache"] == "bypass"
    assert calls(upstream) == 2
    assert ask(client, "control question", extra_body={"seawall": {"cache": {"no_cache": True}}}
               ).headers["x-seawall-cache"] == "bypass"
    never = ask(client, "a private question", extra_body={"seawall": {"cache": False}})
    assert never.headers["x-seawall-cache"] == "bypass"
    assert ask(client, "a private question").headers["x-seawall-cache"] == "miss"  # not stored
    time.sleep(1.1)
    assert ask(client, "control question", extra_headers={"cache-control": "max-age=1"}
               ).headers["x-seawall-cache"] == "miss"  # stored entry too old for this caller
    assert ask(client, "control question").headers["x-seawall-cache"] == "hit"
    hot = ask(client, "control question", temperature=1.5)
    assert hot.headers["x-seawall-cache"] == "bypass"
    assert record(gw, hot.headers["x-request-id"])["cache"] == "bypass"
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "control question", extra_body={"seawall": {"cache": {"no_cash": True}}})
    assert "no_cash" in e.value.message


def test_cache_off_for_a_model_and_for_a_key(gw: Running, upstream: FakeUpstreamClient) -> None:
    client = sdk(gw)
    for _ in range(2):
        r = ask(client, "uncached question", model="uncached")
        assert "x-seawall-cache" not in r.headers
    opted_out = sdk(gw, make_key(gw, "acme", cache=False))
    for _ in range(2):
        assert "x-seawall-cache" not in ask(opted_out, "uncached question").headers
    assert calls(upstream) == 4


def test_purge_by_tenant_model_and_entry(gw: Running, upstream: FakeUpstreamClient) -> None:
    acme = sdk(gw, make_key(gw, "acme"))
    first = ask(acme, "purge me")
    ask(sdk(gw), "keep me")
    admin = {"authorization": f"Bearer {MASTER}"}
    r = httpx.post(gw.url + "/admin/cache/purge", json={"tenant": "acme"}, headers=admin)
    assert r.json() == {"purged": 1}
    assert ask(acme, "purge me").headers["x-seawall-cache"] == "miss"
    assert ask(sdk(gw), "keep me").headers["x-seawall-cache"] == "hit"
    entry = record(gw, ask(sdk(gw), "keep me").headers["x-request-id"])["cache_entry"]
    r = httpx.post(gw.url + "/admin/cache/purge", json={"entry": entry}, headers=admin)
    assert r.json() == {"purged": 1}
    assert ask(sdk(gw), "keep me").headers["x-seawall-cache"] == "miss"
    assert first.headers["x-seawall-cache"] == "miss"
    # Refused without a scope, and for a virtual key.
    r = httpx.post(gw.url + "/admin/cache/purge", json={}, headers=admin)
    assert r.status_code == 400 and r.json()["error"]["code"] == "purge_unscoped"
    r = httpx.post(gw.url + "/admin/cache/purge", json={"all": True},
                   headers={"authorization": f"Bearer {make_key(gw, 'acme')}"})
    assert r.status_code == 403 and "'admin:cache'" in r.text
    stats = httpx.get(gw.url + "/admin/cache", headers=admin).json()
    assert stats["entries"] >= 1


def test_ttl_expiry_and_lru_eviction(upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.reset()
    # (Without coalescing: answers are stored all the same.)
    with run_gateway(_config(upstream, ttl_s=0.5, max_entries=2, coalesce=False),
                     tmp_path) as gw:
        client = sdk(gw)
        ask(client, "first question about apples")
        assert ask(client, "first question about apples").headers["x-seawall-cache"] == "hit"
        time.sleep(0.7)
        assert ask(client, "first question about apples").headers["x-seawall-cache"] == "miss"
    upstream.reset()
    with run_gateway(_config(upstream, max_entries=2), tmp_path / "lru") as gw:
        client = sdk(gw)
        for q in ("alpha question one", "beta question two"):
            ask(client, q)
        ask(client, "alpha question one")  # alpha is now the most recently used
        ask(client, "gamma question three")  # evicts beta
        time.sleep(0.1)
        assert ask(client, "alpha question one").headers["x-seawall-cache"] == "hit"
        assert ask(client, "beta question two").headers["x-seawall-cache"] == "miss"
        assert "seawall_cache_evictions_total{reason=\"lru\"}" in httpx.get(
            gw.url + "/metrics").text


def test_entries_and_vectors_survive_a_restart(upstream: FakeUpstreamClient,
                                               tmp_path: Path) -> None:
    upstream.reset()
    with run_gateway(_config(upstream), tmp_path) as gw:
        ask(sdk(gw), "How do I reset my password?")
        time.sleep(0.1)  # stored off the request path
    with run_gateway(_config(upstream), tmp_path) as gw:
        assert ask(sdk(gw), "How do I reset my password?").headers["x-seawall-cache"] == "hit"
        assert ask(sdk(gw), "how can I reset my password"
                   ).headers["x-seawall-cache"] == "semantic-hit"
    assert calls(upstream) == 1


def test_cli_stats_and_purge_on_the_file_while_serving(upstream: FakeUpstreamClient,
                                                       tmp_path: Path) -> None:
    upstream.reset()
    config = {"data_dir": str(tmp_path / "data"), **_config(upstream)}
    config_file = tmp_path / "seawall.yaml"
    config_file.write_text(yaml.safe_dump(config))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "seawall.cli", "cache", *args,
                               "--config", str(config_file)],
                              capture_output=True, text=True, timeout=60)

    with run_app(create_app(load_settings(config_file))) as gw:
        client = sdk(gw)
        ask(client, "How do I reset my password?")
        ask(sdk(gw, make_key(gw, "acme")), "How do I reset my password?")
        stats = cli("stats")
        assert stats.returncode == 0, stats.stderr
        assert "acme" in stats.stdout and "default" in stats.stdout
        refused = cli("purge")
        assert refused.returncode != 0 and "--all" in refused.stderr
        purged = cli("purge", "--tenant", "default")
        assert purged.returncode == 0 and "purged 1 entry" in purged.stdout
        # The running server never serves the deleted entry, exactly or semantically.
        assert ask(client, "How do I reset my password?").headers["x-seawall-cache"] == "miss"
        assert calls(upstream) == 3


def test_leader_hanging_up_does_not_cut_its_followers(gw: Running,
                                                       upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"ttft_s": 0.2, "tokens_per_s": 20})
    text = "one two three four five six seven eight"

    async def main() -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10,
                                     headers={"authorization": f"Bearer {MASTER}"}) as http:
            body = {"model": "m", "stream": True,
                    "messages": [{"role": "user", "content": text}]}
            async with http.stream("POST", "/v1/chat/completions", json=body) as leader:
                assert leader.headers["x-seawall-cache"] == "miss"
                follower = asyncio.create_task(http.post("/v1/chat/completions", json={
                    **body, "stream": False}))
                async for _ in leader.aiter_lines():
                    break  # the leader's client hangs up after its first event
            answer = await follower
            return answer.headers["x-seawall-cache"], answer.json()[
                "choices"][0]["message"]["content"]

    status, content = asyncio.run(main())
    assert status == "coalesced" and content == text
    settle(gw)
    # The answer the follower got is kept, though its leader's client left.
    assert ask(sdk(gw), text).headers["x-seawall-cache"] == "hit"
    assert calls(upstream) == 1


def test_stale_answer_when_every_deployment_fails(upstream: FakeUpstreamClient,
                                                  tmp_path: Path) -> None:
    upstream.reset()
    upstream.script(default={})
    config = _config(upstream, ttl_s=0.3, stale_if_error_s=60)
    config["resilience"] = {"retries": {"max_attempts": 1}}
    with run_gateway(config, tmp_path) as gw:
        client = sdk(gw)
        fresh = ask(client, "What are your opening hours?").parse().choices[0].message.content
        time.sleep(0.5)  # expired, but within stale_if_error_s
        upstream.script(default={"error_status": 503})
        stale = ask(client, "What are your opening hours?")
        assert stale.headers["x-seawall-cache"] == "stale"
        assert stale.headers["x-seawall-degraded"] == "cache"
        assert stale.parse().choices[0].message.content == fresh
        rec = record(gw, stale.headers["x-request-id"])
        assert rec["degraded"] == "cache" and rec["cost_usd"] == 0 and rec["saved_usd"] > 0
        # Never for an unanswered question, nor for a no-store request.
        with pytest.raises(openai.APIStatusError):
            ask(client, "Something never asked before")
        with pytest.raises(openai.APIStatusError):
            ask(client, "What are your opening hours?", extra_headers={"cache-control": "no-store"})
        upstream.script(default={})


def test_a_key_can_turn_the_cache_on_unless_the_model_forbids_it(
        upstream: FakeUpstreamClient, tmp_path: Path) -> None:
    upstream.reset()
    upstream.script(default={})
    config = _config(upstream)
    config["cache"]["enabled"] = False
    with run_gateway(config, tmp_path) as gw:
        opted_in = sdk(gw, make_key(gw, "acme", cache=True))
        assert "x-seawall-cache" not in ask(sdk(gw), "opt-in question").headers  # default off
        assert ask(opted_in, "opt-in question").headers["x-seawall-cache"] == "miss"
        assert ask(opted_in, "opt-in question").headers["x-seawall-cache"] == "hit"
        # models.uncached says cache.enabled: false itself: no key overrides that.
        for _ in range(2):
            assert "x-seawall-cache" not in ask(opted_in, "q", model="uncached").headers
    assert calls(upstream) == 4
