"""The gateway in front of real HTTP upstreams (the fake server speaking the
OpenAI and Anthropic wire formats), driven by the official openai SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient, start_fake_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamClient]:
    url, stop = start_fake_upstream(api_key="up-key")
    yield FakeUpstreamClient(url)
    stop()


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base = upstream.base_url
    config = {
        "auth": {"allow_anonymous_loopback": True},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {
            "oa": {"type": "openai", "base_url": base + "/v1", "api_key": "up-key"},
            "claude": {"type": "anthropic", "base_url": base, "api_key": "up-key"},
        },
        "models": {
            "gpt-x": {"provider": "oa", "model": "upstream-gpt"},
            "gpt-rl": {"provider": "oa", "model": "upstream-gpt"},  # for the 429 test
            "claude": {"provider": "claude", "model": "claude-test"},
            "emb": {"provider": "oa", "kind": "embedding"},
        },
    }
    with run_gateway(config, tmp_path_factory.mktemp("up")) as running:
        yield running


@pytest.fixture
def client(gw: Running, upstream: FakeUpstreamClient) -> openai.OpenAI:
    upstream.reset()
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused-on-loopback", max_retries=0)


@pytest.mark.parametrize("model", ["gpt-x", "claude"])
def test_non_stream_and_stream_through_each_wire_format(
        client: openai.OpenAI, upstream: FakeUpstreamClient, model: str) -> None:
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "terse"},
                               {"role": "user", "content": "ping pong"}], max_tokens=50)
    assert resp.choices[0].message.content == "ping pong"
    assert resp.usage is not None and resp.usage.completion_tokens == 2
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "alpha beta gamma"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "alpha beta gamma"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    sent = upstream.calls()["requests"][-1]
    assert sent["model"] == ("upstream-gpt" if model == "gpt-x" else "claude-test")


def test_openai_passthrough_of_unknown_fields_and_tools(
        client: openai.OpenAI, upstream: FakeUpstreamClient) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "x"}],
                                   tools=tools, tool_choice="auto", seed=7, logprobs=True,
                                   response_format={"type": "json_object"})
    sent = upstream.calls()["requests"][-1]
    assert sent["tools"] == tools and sent["seed"] == 7 and sent["logprobs"] is True
    assert sent["response_format"] == {"type": "json_object"}


def test_anthropic_tool_use_becomes_tool_calls(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    resp = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools)
    call = resp.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and '"Paris"' in call.function.arguments


def test_upstream_errors_map_to_client_errors(client: openai.OpenAI,
                                              upstream: FakeUpstreamClient) -> None:
    # A Retry-After longer than resilience.retries.max_retry_after_s is passed on, not waited.
    upstream.script(queue=[{"error_status": 429, "retry_after_s": 30}])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-rl",
                                       messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "30"
    assert upstream.calls()["calls"] == 1
    upstream.script(default={"error_status": 400})
    with pytest.raises(openai.BadRequestError) as e2:
        client.chat.completions.create(model="claude",
                                       messages=[{"role": "user", "content": "x"}])
    assert e2.value.body["code"] == "upstream_rejected"  # type: ignore[index]
    assert upstream.calls()["calls"] == 2  # one more: a bad request is never retried
    upstream.script(default={})


def test_embeddings_through_openai_provider(client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="emb", input=["a", "b", "c"])
    assert [d.index for d in resp.data] == [0, 1, 2]


@pytest.mark.parametrize("model", ["gpt-x", "claude"])
async def test_client_disconnect_stops_upstream_generation(
        gw: Running, upstream: FakeUpstreamClient, model: str) -> None:
    upstream.reset()
    upstream.script(default={"text": " ".join(f"w{i}" for i in range(400)),
                             "tokens_per_s": 50})
    started = time.monotonic()
    async with httpx.AsyncClient() as http, http.stream(
            "POST", gw.url + "/v1/chat/completions",
            json={"model": model, "stream": True,
                  "messages": [{"role": "user", "content": "go"}]}) as r:
        n = 0
        async for line in r.aiter_lines():
            n += line.startswith("data:")
            if n >= 3:
                break
    # 400 words at 50/s take 8 s; the upstream must see the hang-up long before.
    await upstream.wait_for(lambda c: c["cancelled"] >= 1, within_s=3.0)
    assert time.monotonic() - started < 4
    upstream.script(default={})
    rec = gw.traces(5)[-1]
    assert rec["status"] == 499 and rec["model"] == model
