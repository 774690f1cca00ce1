"""OpenAI wire-format compatibility, with the official SDK against a real
gateway: logprobs, ``n`` choices, embeddings sent as token ids, Retry-After,
``GET /v1/models/{id}``, the 404 for an unknown route, and seeded local runs.

The upstream is the fake server (``seawall fake-upstream``) over a real socket,
so what is checked is what crosses the wire both ways."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from seawall.ml.tokens import load_encoding
from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-compat"
USER = [{"role": "user", "content": "alpha beta gamma"}]


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    base = upstream.base_url
    config = {
        "auth": {"master_key": MASTER},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": True, "semantic": {"enabled": False}},
        "providers": {
            "oa": {"type": "openai", "base_url": base + "/v1", "api_key": "x"},
            "claude": {"type": "anthropic", "base_url": base, "api_key": "x"},
            "local": {"type": "local"},
            "minilm": {"type": "embedder"},
        },
        "models": {
            "gpt-x": {"provider": "oa", "model": "upstream-gpt"},
            "gpt-rl": {"provider": "oa", "model": "upstream-gpt"},  # cools down after a 429
            "claude": {"provider": "claude", "model": "claude-test"},
            "small": {"provider": "local", "cache": {"enabled": False}},
            "emb-up": {"provider": "oa", "kind": "embedding", "model": "fake-embedding"},
            "emb-local": {"provider": "minilm", "kind": "embedding"},
        },
    }
    with run_gateway(config, tmp_path_factory.mktemp("compat")) as running:
        yield running


@pytest.fixture
def client(gw: Running, upstream: FakeUpstreamClient) -> openai.OpenAI:
    upstream.reset()
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)


# -- logprobs --------------------------------------------------------------------


def _check_logprobs(content: list[Any], words: list[str], top: int) -> None:
    assert [e.token for e in content] == words
    for e in content:
        assert e.logprob < 0 and len(e.top_logprobs) == top
        assert e.top_logprobs[0].token == e.token


def test_logprobs_pass_through_unstreamed(client: openai.OpenAI,
                                          upstream: FakeUpstreamClient) -> None:
    resp = client.chat.completions.create(model="gpt-x", messages=USER, logprobs=True,
                                          top_logprobs=2)
    lp = resp.choices[0].logprobs
    assert lp is not None and lp.content is not None
    _check_logprobs(lp.content, ["alpha", " beta", " gamma"], 2)
    sent = upstream.calls()["requests"][-1]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    assert resp.choices[0].message.content == "alpha beta gamma"


def test_logprobs_pass_through_streamed(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-x", messages=USER, logprobs=True,
                                                 top_logprobs=1, stream=True))
    content = [e for c in chunks if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content or ()]
    _check_logprobs(content, ["alpha", " beta", " gamma"], 1)


def test_no_logprobs_unless_asked(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-x", messages=USER)
    assert resp.choices[0].logprobs is None


@pytest.mark.parametrize("model", ["claude", "small"])
def test_providers_without_logprobs_refuse_them(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=USER, logprobs=True,
                                       max_tokens=4)
    assert e.value.code == "logprobs_not_supported" and e.value.param == "logprobs"


def test_top_logprobs_is_bounded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-x", messages=USER, logprobs=True,
                                       top_logprobs=21)
    assert e.value.param == "top_logprobs"


# -- n choices -------------------------------------------------------------------


def test_n_choices_unstreamed(client: openai.OpenAI, upstream: FakeUpstreamClient) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-x", messages=USER, n=3,
                                                           temperature=0)
    resp = raw.parse()
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.message.content == "alpha beta gamma" for c in resp.choices)
    assert resp.usage is not None and resp.usage.completion_tokens == 9
    assert upstream.calls()["requests"][-1]["n"] == 3
    # One cache entry holds one answer: n > 1 bypasses the cache (and so is never served
    # a stored single answer).
    assert raw.headers["x-seawall-cache"] == "bypass"
    again = client.chat.completions.create(model="gpt-x", messages=USER, n=3, temperature=0)
    assert len(again.choices) == 3 and upstream.calls()["calls"] == 2


def test_n_choices_streamed_with_logprobs(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-x", messages=USER, n=3, stream=True, logprobs=True,
        stream_options={"include_usage": True}))
    text: dict[int, str] = {}
    tokens: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    for c in chunks:
        for ch in c.choices:
            text[ch.index] = text.get(ch.index, "") + (ch.delta.content or "")
            if ch.logprobs and ch.logprobs.content:
                tokens.setdefault(ch.index, []).extend(e.token for e in ch.logprobs.content)
            finish[ch.index] = ch.finish_reason or finish.get(ch.index)
    assert text == {i: "alpha beta gamma" for i in range(3)}
    assert tokens == {i: ["alpha", " beta", " gamma"] for i in range(3)}
    assert finish == {i: "stop" for i in range(3)}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9


@pytest.mark.parametrize("stream", [False, True])
def test_every_choice_is_in_the_trace_record(gw: Running, client: openai.OpenAI,
                                             upstream: FakeUpstreamClient,
                                             stream: bool) -> None:
    """``output`` is the first choice's; the others are recorded beside it
    (``route.choices``), redacted like the output."""
    upstream.script(default={"text": "write to bob@example.com"})
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model="gpt-x", messages=USER, n=3, stream=True) as raw:
            for _ in raw.iter_lines():
                pass
            trace_id = raw.headers["x-request-id"]
    else:
        raw = client.chat.completions.with_raw_response.create(model="gpt-x", messages=USER,
                                                               n=3)
        trace_id = raw.headers["x-request-id"]
    gw.on_server(gw.services.writer.flush())
    doc = httpx.get(f"{gw.url}/admin/traces/{trace_id}", timeout=30,
                    headers={"authorization": f"Bearer {MASTER}"}).json()
    assert doc["output"] == "write to [REDACTED:email]"
    assert doc["route"]["choices"] == [
        {"index": i, "finish_reason": "stop", "output": "write to [REDACTED:email]"}
        for i in (1, 2)]
    one = client.chat.completions.with_raw_response.create(model="gpt-x", messages=USER)
    gw.on_server(gw.services.writer.flush())
    doc = httpx.get(f"{gw.url}/admin/traces/{one.headers['x-request-id']}", timeout=30,
                    headers={"authorization": f"Bearer {MASTER}"}).json()
    assert "choices" not in (doc.get("route") or {})  # one choice: nothing beside the output


@pytest.mark.parametrize("model", ["claude", "small"])
def test_providers_with_one_choice_refuse_n(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=USER, n=2, max_tokens=4)
    assert e.value.code == "n_not_supported" and e.value.param == "n"


def test_n_is_bounded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-x", messages=USER, n=9)
    assert e.value.param == "n"


# -- embeddings as token ids ----------------------------------------------------------

TEXTS = ["The cat sat on the mat.", "Rain is expected tomorrow in Paris."]


def _ids(text: str) -> list[int]:
    return load_encoding("cl100k_base").encode_ordinary(text)


def test_token_ids_reach_openai_upstreams_as_sent(client: openai.OpenAI,
                                                  upstream: FakeUpstreamClient) -> None:
    ids = [_ids(t) for t in TEXTS]
    resp = client.embeddings.create(model="emb-up", input=ids)
    assert [d.index for d in resp.data] == [0, 1]
    assert upstream.calls()["requests"][-1]["input"] == ids
    one = client.embeddings.create(model="emb-up", input=ids[0])  # list[int]: one prompt
    assert len(one.data) == 1
    assert one.data[0].embedding == resp.data[0].embedding
    assert upstream.calls()["requests"][-1]["input"] == [ids[0]]


def test_local_embedder_decodes_token_ids(client: openai.OpenAI, gw: Running) -> None:
    as_text = client.embeddings.create(model="emb-local", input=TEXTS)
    as_ids = client.embeddings.create(model="emb-local", input=[_ids(t) for t in TEXTS])
    one = client.embeddings.create(model="emb-local", input=_ids(TEXTS[1]))
    a = np.array([d.embedding for d in as_text.data])
    b = np.array([d.embedding for d in as_ids.data])
    assert a.shape == b.shape == (2, 384)
    assert np.allclose(a, b, atol=1e-5)
    assert np.allclose(one.data[0].embedding, a[1], atol=1e-5)
    assert not np.allclose(a[0], a[1], atol=1e-2)  # the two texts did not collapse
    # A raw client (no SDK), list of lists, as LangChain's OpenAIEmbeddings sends it.
    r = httpx.post(gw.url + "/v1/embeddings", headers={"authorization": f"Bearer {MASTER}"},
                   json={"model": "emb-local", "input": [_ids(TEXTS[0])]}, timeout=30)
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["data"][0]["embedding"], a[0], atol=1e-5)


@pytest.mark.parametrize("body,param", [
    ({"input": [1, "a"]}, "input"),  # a mix
    ({"input": [[1], "a"]}, "input"),
    ({"input": [[-1]]}, "input[0][0]"),
    ({"input": [[]]}, "input[0]"),
    ({"input": [list(range(8193))]}, "input[0]"),  # over 8192 ids in one input
    ({"input": list(range(8193))}, "input"),
    ({"input": [[1]] * 2049}, "input"),  # over 2048 inputs
])
def test_token_id_inputs_are_bounded(gw: Running, body: dict[str, Any], param: str) -> None:
    r = httpx.post(gw.url + "/v1/embeddings", headers={"authorization": f"Bearer {MASTER}"},
                   json={"model": "emb-local", **body}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_token_ids_are_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="emb-local", input=[[100256]])  # a gap in cl100k
    assert e.value.code == "invalid_token_ids"


# -- Retry-After -----------------------------------------------------------------------


def test_upstream_retry_after_is_rounded_up(client: openai.OpenAI,
                                            upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"error_status": 429, "retry_after_s": 7.3})
    try:
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="gpt-rl", messages=USER,
                                           extra_headers={"cache-control": "no-store"})
    finally:
        upstream.reset()
    headers = e.value.response.headers
    assert headers["retry-after"] == "8"  # 7.3 s: 7 would be too early
    assert headers["retry-after-ms"] == "7300"


def test_key_rate_limit_sends_both_retry_headers(gw: Running) -> None:
    secret = f"sk-sw-compat-{time.monotonic_ns()}"
    key = ApiKey(id=f"key_compat_{time.monotonic_ns()}", name="compat", tenant="compat",
                 key_hash=hash_key(secret), prefix=secret[:10], rpm=1, created_at=time.time())
    gw.on_server(gw.services.store.create_key(key))
    team = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    team.chat.completions.create(model="gpt-x", messages=USER)
    with pytest.raises(openai.RateLimitError) as e:
        team.chat.completions.create(model="gpt-x", messages=USER)
    seconds = int(e.value.response.headers["retry-after"])
    ms = int(e.value.response.headers["retry-after-ms"])
    assert 0 < ms <= 60_000 and seconds * 1000 >= ms > (seconds - 1) * 1000


# -- models ----------------------------------------------------------------------------


def test_retrieve_model(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    got = client.models.retrieve("gpt-x")
    assert got.id == "gpt-x" and got.model_dump() == listed["gpt-x"].model_dump()
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"


def test_unknown_route_says_what_is_served(gw: Running) -> None:
    r = httpx.get(gw.url + "/v1/completions", headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "not_found" and "No route GET /v1/completions" in err["message"]
    assert "POST /v1/chat/completions" in err["message"] and "/v1/models" in err["message"]


# -- seed on the local model --------------------------------------------------------------


@pytest.mark.slow
def test_seeded_local_answers_repeat_across_a_warm_cache(client: openai.OpenAI) -> None:
    """llama.cpp reuses the KV cache of a shared prompt prefix; without a reset the
    same seeded request repeated at once (its whole prompt cached) drifted."""
    def ask(topic: str) -> str:
        resp = client.chat.completions.create(
            model="small", messages=[{"role": "user", "content": f"Write a poem about {topic}"}],
            seed=1, temperature=1.3, max_tokens=40)
        return resp.choices[0].message.content or ""

    first = ask("the sea.")
    again = ask("the sea.")  # the whole prompt is in the KV cache
    other = ask("the sky at night")  # shares the prompt's prefix
    third = ask("the sea.")
    assert first and first == again == third and other != first


# -- tools through the fake upstream's OpenAI endpoint -------------------------------------


def test_fake_upstream_calls_tools_like_the_in_process_fake(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    resp = client.chat.completions.create(model="gpt-x", messages=ask, tools=tools)
    (call,) = resp.choices[0].message.tool_calls or []
    assert resp.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    chunks = list(client.chat.completions.create(model="gpt-x", messages=ask, tools=tools,
                                                 stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert [tc.function.name for tc in calls if tc.function] == ["get_weather"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
