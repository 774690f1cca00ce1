"""The OpenAI Responses API (``/v1/responses``), driven by the official
``openai`` SDK against a real gateway in front of the fake upstream (which
echoes the last user message and counts every word sent as a prompt token,
so a continued response's usage shows the earlier turns it carried)."""

from __future__ import annotations

import time
import uuid
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

MASTER = "sk-master-responses"
WEATHER_TOOL: dict[str, Any] = {
    "type": "function", "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}


def _config(upstream: FakeUpstreamClient, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"},
                   "gpt-short": {"provider": "oa", "model": "upstream-gpt"},
                   "gpt-cached": {"provider": "oa", "model": "upstream-gpt",
                                  "cache": {"enabled": True, "semantic": False}}},
        "responses": {"max_input_items": 50, "model_chain_tokens": {"gpt-short": 300}},
        **extra,
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream), tmp_path_factory.mktemp("responses")) as running:
        yield running


@pytest.fixture
def client(gw: Running, upstream: FakeUpstreamClient) -> openai.OpenAI:
    upstream.reset()
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)


def _tenant_client(gw: Running, tenant: str) -> openai.OpenAI:
    secret = "sk-sw-" + uuid.uuid4().hex
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_" + uuid.uuid4().hex[:8], name=tenant, tenant=tenant,
        key_hash=hash_key(secret), prefix=secret[:10], rpm=None, created_at=time.time())))
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)


def _sent(upstream: FakeUpstreamClient) -> list[dict[str, Any]]:
    """The messages of the last chat request the upstream received."""
    return list(upstream.calls()["requests"][-1]["messages"])


def _words(n: int) -> str:
    return f"w{n}a w{n}b"


# -- create, retrieve, input items, delete ----------------------------------------------

def test_create_retrieve_list_delete(client: openai.OpenAI, upstream: FakeUpstreamClient
                                     ) -> None:
    r = client.responses.create(model="gpt-x", input="alpha beta gamma",
                                instructions="be brief", temperature=0.3,
                                max_output_tokens=50, metadata={"ticket": "42"}, user="u1")
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status == "completed" and r.output_text == "alpha beta gamma"
    assert r.instructions == "be brief" and r.metadata == {"ticket": "42"}
    assert r.temperature == 0.3 and r.max_output_tokens == 50
    assert r.usage is not None and r.usage.input_tokens == 5 and r.usage.output_tokens == 3
    assert r.usage.total_tokens == 8
    sent = upstream.calls()["requests"][-1]
    assert sent["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "alpha beta gamma"}]
    assert sent["max_completion_tokens"] == 50 and sent["user"] == "u1"

    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == "alpha beta gamma"
    assert got.usage == r.usage and got.metadata == {"ticket": "42"}
    assert got.created_at == r.created_at

    items = client.responses.input_items.list(r.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]
    assert items.data[0].content[0].text == "alpha beta gamma"  # type: ignore[union-attr]

    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_images_text_format_and_tool_choice_translate(client: openai.OpenAI,
                                                      upstream: FakeUpstreamClient) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client.responses.create(
        model="gpt-x", tools=[WEATHER_TOOL], tool_choice="none",  # type: ignore[list-item]
        text={"format": {"type": "json_schema", "name": "out", "schema": schema}},
        input=[{"role": "developer", "content": "rules"},
               {"role": "user", "content": [
                   {"type": "input_text", "text": "look"},
                   {"type": "input_image", "image_url": "data:image/png;base64,AAAA",
                    "detail": "low"}]}])
    sent = upstream.calls()["requests"][-1]
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "out", "schema": schema}}
    assert sent["tool_choice"] == "none"
    assert sent["messages"][0] == {"role": "developer", "content": "rules"}
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                            "detail": "low"}}]


def test_store_false_is_not_retrievable(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-x", input="hello there", store=False)
    assert r.output_text == "hello there" and r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_input_items_pages_in_both_orders(client: openai.OpenAI) -> None:
    items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    r = client.responses.create(model="gpt-x", input=items)  # type: ignore[arg-type]
    desc = client.responses.input_items.list(r.id, limit=2)
    assert [i.content[0].text for i in desc.data] == ["m4", "m3"]  # type: ignore[union-attr]
    assert desc.has_more
    every = [i.content[0].text for i in client.responses.input_items.list(  # type: ignore[union-attr]
        r.id, limit=2, order="asc")]  # the SDK follows ``after`` through the pages
    assert every == ["m0", "m1", "m2", "m3", "m4"]


# -- streaming ---------------------------------------------------------------------------

def test_streamed_response_event_sequence(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-x", input="alpha beta gamma",
                                          stream=True))
    types = [e.type for e in events]
    assert types[:5] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added",
                         "response.output_text.delta"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "alpha beta gamma"
    done = events[-1].response  # type: ignore[union-attr]
    assert done.status == "completed" and done.output_text == "alpha beta gamma"
    assert done.usage is not None and done.usage.input_tokens == 3
    assert client.responses.retrieve(done.id).output_text == "alpha beta gamma"


def test_stream_helper_of_the_sdk(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-x", input="one two") as stream:
        final = stream.get_final_response()
    assert final.output_text == "one two" and final.status == "completed"


# -- conversations -----------------------------------------------------------------------

def test_five_turn_conversation_carries_every_turn(client: openai.OpenAI,
                                                   upstream: FakeUpstreamClient) -> None:
    prev: str | None = None
    for turn in range(1, 6):
        r = client.responses.create(model="gpt-x", input=_words(turn), instructions="be brief",
                                    previous_response_id=prev)
        assert r.output_text == _words(turn) and r.previous_response_id == prev
        # instructions (2 words), 4 words per earlier turn, 2 new: usage counts them all.
        assert r.usage is not None and r.usage.input_tokens == 2 + 4 * (turn - 1) + 2
        prev = r.id
    sent = _sent(upstream)
    assert sent[0] == {"role": "system", "content": "be brief"}
    raw = client.responses.with_raw_response.create(model="gpt-x", input="more",
                                                    previous_response_id=prev)
    assert raw.headers["x-seawall-history"].startswith("turns=5; dropped=0; tokens=")
    assert [m["content"] for m in sent[1:]] == [
        _words(t) for t in range(1, 6) for _ in (0, 1)][:-1]
    assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * 4 + ["user"]


def test_streamed_turn_continues_a_conversation(client: openai.OpenAI,
                                                upstream: FakeUpstreamClient) -> None:
    first = client.responses.create(model="gpt-x", input=_words(1))
    events = list(client.responses.create(model="gpt-x", input=_words(2), stream=True,
                                          previous_response_id=first.id))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.previous_response_id == first.id and final.usage.input_tokens == 6
    third = client.responses.create(model="gpt-x", input=_words(3),
                                    previous_response_id=final.id)
    assert third.usage is not None and third.usage.input_tokens == 10
    assert [m["content"] for m in _sent(upstream)] == [
        _words(1), _words(1), _words(2), _words(2), _words(3)]


def test_long_conversation_drops_oldest_turns_keeps_instructions(
        client: openai.OpenAI, upstream: FakeUpstreamClient) -> None:
    """gpt-short has a 300-token history budget: each turn here is ~90 tokens,
    so only the newest turns go with the new input."""
    filler = " ".join(["word"] * 40)
    prev = None
    for turn in range(1, 7):
        r = client.responses.create(model="gpt-short", input=f"t{turn} {filler}",
                                    instructions="stay calm", previous_response_id=prev)
        prev = r.id
    sent = _sent(upstream)
    assert sent[0] == {"role": "system", "content": "stay calm"}
    assert r.usage is not None and r.usage.input_tokens == sum(
        len(str(m["content"]).split()) for m in sent)
    kept = [m["content"].split()[0] for m in sent[1:] if m["role"] == "user"]
    assert kept[-1] == "t6" and "t1" not in kept and 2 <= len(kept) <= 4
    # ...and the turns that were sent are the newest, in order.
    assert kept == [f"t{t}" for t in range(7 - len(kept), 7)]


def test_function_tool_round_trip(client: openai.OpenAI, upstream: FakeUpstreamClient
                                  ) -> None:
    r = client.responses.create(model="gpt-x", input="what is the weather in Paris?",
                                tools=[WEATHER_TOOL])  # type: ignore[list-item]
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].arguments == '{"city": "Paris"}'
    sent = upstream.calls()["requests"][-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather"

    r2 = client.responses.create(
        model="gpt-x", previous_response_id=r.id, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "sunny, 21 C"}])
    assert r2.status == "completed" and not [o for o in r2.output if o.type == "function_call"]
    sent_msgs = _sent(upstream)
    assistant = sent_msgs[-2]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == calls[0].call_id
    assert sent_msgs[-1] == {"role": "tool", "tool_call_id": calls[0].call_id,
                             "content": "sunny, 21 C"}


def test_streamed_function_call_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-x", input="weather in Paris?",
                                          tools=[WEATHER_TOOL], stream=True))  # type: ignore[list-item]
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done[0].arguments == '{"city": "Paris"}'  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert [o.type for o in final.output] == ["function_call"]
    assert final.output[0].name == "get_weather"


def test_the_chat_pipeline_applies_cache_and_records(gw: Running, client: openai.OpenAI,
                                                    upstream: FakeUpstreamClient) -> None:
    first = client.responses.with_raw_response.create(model="gpt-cached", input="cache me")
    again = client.responses.with_raw_response.create(model="gpt-cached", input="cache me")
    assert again.headers["x-seawall-cache"] in ("hit", "coalesced")  # the store may lag
    assert again.parse().output_text == first.parse().output_text == "cache me"
    assert upstream.calls()["calls"] == 1
    assert again.parse().id != first.parse().id  # each its own stored response
    trace_id = first.headers["x-request-id"]
    assert first.parse().id == "resp_" + trace_id
    rec = None
    deadline = time.monotonic() + 10  # the writer flushes every 10 ms here
    while rec is None and time.monotonic() < deadline:
        rec = gw.on_server(gw.services.store.get_trace(trace_id))
        time.sleep(0.02)
    assert rec is not None and rec["endpoint"] == "responses" and rec["model"] == "gpt-cached"
    assert rec["prompt_tokens"] == 2


# -- tenants, errors, limits -------------------------------------------------------------

def test_another_tenants_response_is_not_found(gw: Running, client: openai.OpenAI) -> None:
    alice, bob = _tenant_client(gw, "alice"), _tenant_client(gw, "bob")
    r = alice.responses.create(model="gpt-x", input="secret plans")
    assert alice.responses.retrieve(r.id).output_text == "secret plans"
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        bob.responses.create(model="gpt-x", input="and?", previous_response_id=r.id)
    assert e.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        bob.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(r.id)
    assert alice.responses.retrieve(r.id).id == r.id  # still there


def test_cancel_background_and_unsupported(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-x", input="hi")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.cancel(r.id)
    assert "synchronous" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_nope")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-x", input="hi", background=True, store=False)
    assert e.value.param == "background"  # background needs store (test_background_responses)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-x", input="hi",
                                tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert e.value.code == "unsupported_value"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-x", input="hi", previous_response_id="resp_nope")


def test_size_limits_are_clear_4xx(gw: Running, client: openai.OpenAI) -> None:
    many = [{"role": "user", "content": "x"}] * 51
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-x", input=many)  # type: ignore[arg-type]
    assert e.value.code == "too_many_items" and "max_input_items" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-x", input="hi",
                                metadata={f"k{i}": "v" for i in range(17)})
    assert e.value.param == "metadata"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-x", input=[{"type": "computer_call_output"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list("resp_x", limit=1000)
    huge = httpx.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {MASTER}"},
                      content=b'{"model": "gpt-x", "input": "' + b"a" * (5 << 20) + b'"}')
    assert huge.status_code == 413
    unauth = httpx.get(gw.url + "/v1/responses/resp_x")
    assert unauth.status_code == 401


# -- many replicas, restarts -------------------------------------------------------------

def _converse(clients: list[openai.OpenAI], turns: int) -> str:
    prev = None
    for turn in range(1, turns + 1):
        c = clients[turn % len(clients)]
        r = c.responses.create(model="gpt-x", input=_words(turn), previous_response_id=prev)
        assert r.usage is not None and r.usage.input_tokens == 4 * (turn - 1) + 2
        prev = r.id
    assert prev is not None
    return prev


def test_conversation_alternates_between_two_replicas_on_postgres(
        upstream: FakeUpstreamClient, pg_url: str, tmp_path: Path) -> None:
    upstream.reset()
    config = _config(upstream, store={"kind": "postgres", "url": pg_url})
    with run_gateway(config, tmp_path / "a") as a, run_gateway(config, tmp_path / "b") as b:
        clients = [openai.OpenAI(base_url=g.url + "/v1", api_key=MASTER, max_retries=0)
                   for g in (a, b)]
        last = _converse(clients, 5)
        assert [m["content"] for m in _sent(upstream)] == [
            _words(t) for t in range(1, 6) for _ in (0, 1)][:-1]
        assert clients[0].responses.retrieve(last).id == clients[1].responses.retrieve(last).id


def test_conversation_survives_a_restart_on_sqlite(upstream: FakeUpstreamClient,
                                                   tmp_path: Path) -> None:
    upstream.reset()
    config = _config(upstream)
    with run_gateway(config, tmp_path) as g:
        c = openai.OpenAI(base_url=g.url + "/v1", api_key=MASTER, max_retries=0)
        prev = _converse([c], 3)
    with run_gateway(config, tmp_path) as g:
        c = openai.OpenAI(base_url=g.url + "/v1", api_key=MASTER, max_retries=0)
        r = c.responses.create(model="gpt-x", input=_words(4), previous_response_id=prev)
        assert r.usage is not None and r.usage.input_tokens == 4 * 3 + 2
        assert (tmp_path / "data" / "responses.db").exists()


def test_upstream_cut_mid_stream_ends_with_response_failed_and_stores_nothing(
        client: openai.OpenAI, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"disconnect_after_chunks": 2})
    events = list(client.responses.create(model="gpt-x", input="alpha beta gamma delta",
                                          stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    assert "response.completed" not in [e.type for e in events]
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(failed.id)


def test_upstream_failure_unstreamed_is_an_error_and_nothing_is_stored(
        client: openai.OpenAI, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"error_status": 400})
    with pytest.raises(openai.APIStatusError) as e:
        client.responses.create(model="gpt-x", input="hi")
    assert e.value.status_code == 400
    rid = "resp_" + e.value.response.headers["x-request-id"]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(rid)


def test_retention_hides_then_deletes_old_responses(upstream: FakeUpstreamClient,
                                                   tmp_path: Path) -> None:
    upstream.reset()
    config = _config(upstream)
    config["responses"] = {"retention_days": 1 / 86_400}  # one second
    with run_gateway(config, tmp_path) as g:
        c = openai.OpenAI(base_url=g.url + "/v1", api_key=MASTER, max_retries=0)
        r = c.responses.create(model="gpt-x", input="short lived")
        stored = g.on_server(g.services.responses.store.get("default", r.id))  # the master's
        assert stored is not None and stored.expires_at is not None
        assert stored.expires_at - stored.created_at == pytest.approx(1.0)
        time.sleep(1.5)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="gpt-x", input="and?", previous_response_id=r.id)
        assert g.on_server(g.services.responses.store.purge_expired(time.time())) == 1
