"""The Anthropic Messages API inbound (``POST /v1/messages``), driven by the
official ``anthropic`` SDK against a real gateway in front of the fake
upstream, speaking the OpenAI wire format (model ``gpt-x``) and the
Anthropic one (model ``claude``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-messages"
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather", "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
         "AAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    base = upstream.base_url
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {
            "oa": {"type": "openai", "base_url": base + "/v1"},
            "claude": {"type": "anthropic", "base_url": base, "api_key": "up-key"},
            "inproc": {"type": "fake"},
        },
        "models": {
            "gpt-x": {"provider": "oa", "model": "upstream-gpt"},
            "claude": {"provider": "claude", "model": "claude-test"},
            "echo": {"provider": "inproc"},
            "gpt-cached": {"provider": "oa", "model": "upstream-gpt",
                           "cache": {"enabled": True, "semantic": False}},
        },
    }
    with run_gateway(config, tmp_path_factory.mktemp("messages")) as running:
        yield running


@pytest.fixture
def fake(upstream: FakeUpstreamClient) -> FakeUpstreamClient:
    upstream.reset()
    return upstream


@pytest.fixture
def client(gw: Running, fake: FakeUpstreamClient) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0)


def last_sent(fake: FakeUpstreamClient) -> dict[str, Any]:
    sent: dict[str, Any] = fake.calls()["requests"][-1]
    return sent


def test_sync_create_reaches_an_openai_format_upstream(
        client: anthropic.Anthropic, fake: FakeUpstreamClient) -> None:
    msg = client.messages.create(
        model="gpt-x", max_tokens=50, system="Be terse.", metadata={"user_id": "u-42"},
        messages=[{"role": "user", "content": "hello there"}],
        # this SDK version no longer has these arguments; older ones send them so
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5})
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "gpt-x"
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "hello there"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.output_tokens == 2 and msg.usage.input_tokens > 0

    sent = last_sent(fake)
    assert sent["model"] == "upstream-gpt"
    assert sent["messages"] == [{"role": "system", "content": "Be terse."},
                                {"role": "user", "content": "hello there"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.5 and sent["top_p"] == 0.9
    assert sent["user"] == "u-42"
    assert "top_k" not in sent and "metadata" not in sent  # dropped (docs/anthropic.md)


def test_system_blocks_thinking_and_images(client: anthropic.Anthropic,
                                           fake: FakeUpstreamClient) -> None:
    msg = client.messages.create(
        model="gpt-x", max_tokens=50,
        system=[{"type": "text", "text": "Rule one."},
                {"type": "text", "text": "Rule two.", "cache_control": {"type": "ephemeral"}}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "ok"}]},
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PIXEL}},
                {"type": "text", "text": "describe this"}]}])
    assert msg.content[0].text == "describe this"  # type: ignore[union-attr]
    sent = last_sent(fake)
    assert "thinking" not in sent
    assert sent["messages"] == [
        {"role": "system", "content": "Rule one.\n\nRule two."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PIXEL}},
            {"type": "text", "text": "describe this"}]}]


async def test_async_create(gw: Running, fake: FakeUpstreamClient) -> None:
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=MASTER,
                                        max_retries=0) as aclient:
        msg = await aclient.messages.create(
            model="gpt-x", max_tokens=20, messages=[{"role": "user", "content": "one two"}])
    assert msg.content[0].text == "one two"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["gpt-x", "claude", "echo"])
def test_stream_text_and_final_message(client: anthropic.Anthropic,
                                       fake: FakeUpstreamClient, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=50,
                                messages=[{"role": "user", "content": "alpha beta gamma"}]
                                ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "alpha beta gamma"
    assert final.content[0].text == "alpha beta gamma"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3 and final.usage.input_tokens > 0
    if model == "echo":  # the in-process fake provider: nothing goes over HTTP
        assert fake.calls()["calls"] == 0
    else:
        assert last_sent(fake)["model"] == ("upstream-gpt" if model == "gpt-x"
                                            else "claude-test")


def test_stream_event_sequence_is_anthropics(gw: Running, fake: FakeUpstreamClient) -> None:
    body = {"model": "gpt-x", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "red green"}]}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body,
                      headers={"x-api-key": MASTER, "anthropic-version": "2023-06-01"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln.startswith("event: ")]
    names = [ln[len("event: "):] for ln in lines]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}


@pytest.mark.parametrize("stream", [False, True])
def test_tools_round_trip_through_an_anthropic_upstream(
        client: anthropic.Anthropic, fake: FakeUpstreamClient, stream: bool) -> None:
    ask = {"role": "user", "content": "What's the weather in Paris?"}
    kw: dict[str, Any] = {"model": "claude", "max_tokens": 100, "tools": [WEATHER_TOOL],
                          "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}
    if stream:
        with client.messages.stream(messages=[ask], **kw) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(messages=[ask], **kw)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    sent = last_sent(fake)
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}

    answer = client.messages.create(messages=[
        ask, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]}],
        **kw)
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text == "18C and sunny"  # type: ignore[union-attr]
    turns = last_sent(fake)["messages"]
    assert turns[1]["content"][-1] == {"type": "tool_use", "id": use.id,
                                       "name": "get_weather", "input": {"city": "Paris"}}
    assert turns[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]}


def test_tools_translate_to_an_openai_format_upstream(
        client: anthropic.Anthropic, fake: FakeUpstreamClient) -> None:
    msg = client.messages.create(
        model="gpt-x", max_tokens=50, tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "thanks"}]}])
    # The fake upstream calls the tool tool_choice names: its OpenAI tool call
    # comes back as a tool_use block.
    block = msg.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris"} and msg.stop_reason == "tool_use"
    sent = last_sent(fake)
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": WEATHER_TOOL["input_schema"]}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": "thanks"}]
    client.messages.create(model="gpt-x", max_tokens=5, tools=[WEATHER_TOOL],
                           tool_choice={"type": "any"},
                           messages=[{"role": "user", "content": "hi"}])
    assert last_sent(fake)["tool_choice"] == "required"


def test_stop_sequences(client: anthropic.Anthropic, fake: FakeUpstreamClient) -> None:
    msg = client.messages.create(model="gpt-x", max_tokens=50, stop_sequences=["STOP"],
                                 messages=[{"role": "user", "content": "one two STOP three"}])
    text = msg.content[0].text  # type: ignore[union-attr]
    assert "one two" in text and "three" not in text and "STOP" not in text
    assert last_sent(fake)["stop"] == ["STOP"]


def test_auth_with_x_api_key_bearer_and_virtual_keys(gw: Running,
                                                     fake: FakeUpstreamClient) -> None:
    secret = "sk-sw-" + uuid.uuid4().hex
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_msg", name="msg-team", tenant="msg-team", key_hash=hash_key(secret),
        prefix=secret[:10], rpm=None, created_at=time.time())))
    ask: dict[str, Any] = {"model": "gpt-x", "max_tokens": 5,
                           "messages": [{"role": "user", "content": "hi"}]}
    for c in (anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0),
              anthropic.Anthropic(base_url=gw.url, auth_token=MASTER, max_retries=0)):
        assert c.messages.create(**ask).content[0].text == "hi"  # type: ignore[union-attr]

    bad = anthropic.Anthropic(base_url=gw.url, api_key="sk-sw-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(**ask)
    assert err.value.status_code == 401
    assert err.value.body["type"] == "error"  # type: ignore[index]
    assert err.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    r = httpx.post(gw.url + "/v1/messages", json=ask)  # no key at all
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_count_tokens(client: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "How many tokens is this sentence?"}]
    plain = client.messages.count_tokens(model="gpt-x", messages=messages)
    with_system = client.messages.count_tokens(model="gpt-x", messages=messages,
                                               system="You are a careful assistant.")
    with_tools = client.messages.count_tokens(model="gpt-x", messages=messages,
                                              tools=[WEATHER_TOOL])
    assert 5 < plain.input_tokens < with_system.input_tokens
    assert plain.input_tokens < with_tools.input_tokens


def test_invalid_requests_get_anthropic_errors(gw: Running, client: anthropic.Anthropic,
                                               fake: FakeUpstreamClient) -> None:
    headers = {"x-api-key": MASTER, "anthropic-version": "2023-06-01"}
    r = httpx.post(gw.url + "/v1/messages", headers=headers,
                   json={"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]

    bad = {
        "not json": b"{nope",
        "bad role": orjson.dumps({"model": "gpt-x", "max_tokens": 5,
                                  "messages": [{"role": "system", "content": "x"}]}),
        "server tool": orjson.dumps({"model": "gpt-x", "max_tokens": 5,
                                     "tools": [{"type": "web_search_20250305",
                                                "name": "web_search"}],
                                     "messages": [{"role": "user", "content": "x"}]}),
        "temperature": orjson.dumps({"model": "gpt-x", "max_tokens": 5, "temperature": 1.5,
                                     "messages": [{"role": "user", "content": "x"}]}),
        "5 stop sequences": orjson.dumps({"model": "gpt-x", "max_tokens": 5,
                                          "stop_sequences": list("abcde"),
                                          "messages": [{"role": "user", "content": "x"}]}),
        "10,001 messages": orjson.dumps({"model": "gpt-x", "max_tokens": 5, "messages": [
            {"role": "user", "content": "x"}] * 10_001}),
        "document": orjson.dumps({"model": "gpt-x", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "document", "source": {}}]}]}),
        "deep": b'{"model": "gpt-x", "max_tokens": 5, "metadata": ' + b"[" * 200
                + b"]" * 200 + b', "messages": [{"role": "user", "content": "x"}]}',
    }
    for name, data in bad.items():
        r = httpx.post(gw.url + "/v1/messages", headers=headers, content=data)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error", name
    assert fake.calls()["calls"] == 0  # nothing reached the upstream

    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="no-such-model", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_upstream_failure_maps_to_anthropic_error(client: anthropic.Anthropic,
                                                  fake: FakeUpstreamClient) -> None:
    fake.script(default={"error_status": 500})
    with pytest.raises(anthropic.InternalServerError) as err:
        client.messages.create(model="gpt-x", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["type"] == "error"  # type: ignore[index]
    assert err.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_trace_record_says_messages(gw: Running, client: anthropic.Anthropic) -> None:
    marker = "tracemarker" + uuid.uuid4().hex[:8]
    client.messages.create(model="gpt-x", max_tokens=20,
                           messages=[{"role": "user", "content": marker}])
    recs = [r for r in gw.traces(200) if marker in (r.get("output") or "")]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["endpoint"] == "messages" and rec["status"] == 200
    assert rec["model"] == "gpt-x" and rec["deployment"]
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] == 1


def test_structured_output_config_becomes_response_format(
        client: anthropic.Anthropic, fake: FakeUpstreamClient) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}},
              "required": ["a"], "additionalProperties": False}
    client.messages.create(model="gpt-x", max_tokens=20,
                           output_config={"format": {"type": "json_schema", "schema": schema}},
                           messages=[{"role": "user", "content": "give json"}])
    assert last_sent(fake)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_a_stream_cut_upstream_ends_with_an_error_event(gw: Running,
                                                       fake: FakeUpstreamClient) -> None:
    fake.script(default={"disconnect_after_chunks": 2})
    body = {"model": "gpt-x", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "one two three four five"}]}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body,
                      headers={"x-api-key": MASTER}) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    names = [ln[len("event: "):] for ln in lines if ln.startswith("event: ")]
    assert "content_block_delta" in names
    assert names[-1] == "error" and "message_stop" not in names
    error = orjson.loads(lines[lines.index("event: error") + 1][len("data: "):])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    fake.script(default={"disconnect_after_chunks": 2})
    client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0)
    with pytest.raises(anthropic.APIStatusError), \
            client.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as s:
        "".join(s.text_stream)  # the SDK raises: a cut answer is never taken as whole


@pytest.mark.parametrize("stream", [False, True])
def test_the_response_cache_answers_messages(gw: Running, client: anthropic.Anthropic,
                                             fake: FakeUpstreamClient, stream: bool) -> None:
    text = f"cache me {uuid.uuid4().hex[:6]} {stream}"
    statuses = []
    for _ in range(2):
        ask: dict[str, Any] = {"model": "gpt-cached", "max_tokens": 20,
                               "messages": [{"role": "user", "content": text}]}
        if stream:
            with client.messages.with_streaming_response.create(stream=True, **ask) as r:
                events = [ln for ln in r.iter_lines() if ln.startswith("event: ")]
                statuses.append(r.headers["x-seawall-cache"])
            assert events[-1] == "event: message_stop"
        else:
            r = client.messages.with_raw_response.create(**ask)
            assert r.parse().content[0].text == text  # type: ignore[union-attr]
            statuses.append(r.headers["x-seawall-cache"])
        gw.on_server(gw.services.cache.settle())
    assert statuses == ["miss", "hit"]
    assert fake.calls()["calls"] == 1


def test_large_bodies_are_served(client: anthropic.Anthropic, fake: FakeUpstreamClient) -> None:
    """Past 256 KB, parsing and translation run in a worker thread (and counting
    past 64 KB): the answers are the same."""
    big = "word " * 70_000  # 350 KB
    msg = client.messages.create(model="gpt-x", max_tokens=3,
                                 messages=[{"role": "user", "content": big}])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3
    assert last_sent(fake)["messages"] == [{"role": "user", "content": big}]
    counted = client.messages.count_tokens(model="gpt-x",
                                           messages=[{"role": "user", "content": big}])
    assert 70_000 <= counted.input_tokens <= 70_100


def test_admission_overload_is_a_529_overloaded_error(tmp_path: Any) -> None:
    config = {"auth": {"master_key": MASTER},
              "admission": {"max_inflight": 1},
              "providers": {"slow": {"type": "fake", "ttft_s": 1.5}},
              "models": {"slow": {"provider": "slow"}}}
    ask: dict[str, Any] = {"model": "slow", "max_tokens": 5,
                           "messages": [{"role": "user", "content": "hi"}]}
    with run_gateway(config, tmp_path) as gw:
        client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0)
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(client.messages.create, **ask)
            deadline = time.monotonic() + 10
            while gw.services.admission.inflight < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(anthropic.APIStatusError) as err:
                client.messages.create(**ask)
            assert holder.result(timeout=10).content[0].text == "hi"  # type: ignore[union-attr]
    assert err.value.status_code == 529
    assert err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert err.value.response.headers["retry-after"]


def test_a_claude_code_shaped_request(gw: Running, fake: FakeUpstreamClient) -> None:
    """What Claude Code sends: ``?beta=true``, beta headers, a bearer token,
    cached system blocks, JSON-Schema tools, thinking, a long user id."""
    body = {
        "model": "gpt-x", "max_tokens": 32000, "temperature": 1, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "properties": {"command": {"type": "string"}}, "required": ["command"],
            "additionalProperties": False}}],
        "metadata": {"user_id": "user_" + "a" * 64 + "_account__session_" + str(uuid.uuid4())},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": []},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
            {"type": "text", "text": "list files", "cache_control": {"type": "ephemeral"}}]}],
    }
    headers = {"authorization": f"Bearer {MASTER}", "anthropic-version": "2023-06-01",
               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
               "x-app": "cli"}
    with httpx.stream("POST", gw.url + "/v1/messages?beta=true", json=body,
                      headers=headers) as r:
        assert r.status_code == 200, r.read()
        names = [ln[7:] for ln in r.iter_lines() if ln.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    sent = last_sent(fake)
    assert sent["messages"][0] == {"role": "system", "content": "You are Claude Code."}
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
        {"type": "text", "text": "list files"}]
    assert sent["tools"][0]["function"]["parameters"] == body["tools"][0]["input_schema"]
    assert "thinking" not in sent and "context_management" not in sent
