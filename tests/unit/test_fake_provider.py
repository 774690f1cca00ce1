"""The in-process fake model: chunk shape, pacing, scripted failures, cancellation."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import pytest

from seawall.api.wire import ChatCompletionRequest, convert
from seawall.config import FakeProviderSettings
from seawall.errors import InvalidRequest, RateLimited, UpstreamError
from seawall.providers.base import ChatCall, Chunk, Gatherer
from seawall.providers.fake import (
    FakeBehavior,
    FakeDisconnect,
    FakeFailure,
    FakeProvider,
    FakeWords,
    fake_vector,
    fake_words,
    split_words,
)


def make_call(content: str = "Hello brave new world", **extra: Any) -> ChatCall:
    raw = {"model": "fake", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": content}], **extra}
    return ChatCall(request=convert(raw, ChatCompletionRequest), raw=raw, model="fake-up",
                    stream=True)


def provider(**settings: Any) -> FakeProvider:
    return FakeProvider("fake", FakeProviderSettings(type="fake", **settings))


async def collect(p: FakeProvider, call: ChatCall) -> list[Chunk]:
    return [c async for c in p.chat(call)]


def test_split_words_keeps_spaces() -> None:
    assert split_words("Hello world") == ["Hello", " world"]
    assert "".join(split_words("a  b\nc")) == "a  b\nc"
    assert split_words("") == []


def test_behavior_from_settings_and_dict() -> None:
    s = FakeProviderSettings(type="fake", text="hi", ttft_s=0.5, error_status=503,
                             retry_after_s=2)
    b = FakeBehavior.from_settings(s)
    assert (b.text, b.ttft_s, b.error_status, b.retry_after_s) == ("hi", 0.5, 503, 2)
    assert FakeBehavior.from_dict({"text": "x", "tokens_per_s": 10}).tokens_per_s == 10
    with pytest.raises(ValueError, match="tfft_s"):
        FakeBehavior.from_dict({"tfft_s": 1})
    with pytest.raises(ValueError, match="error_status"):
        FakeBehavior.from_dict({"error_status": 200})


async def test_chunks_role_words_finish_usage() -> None:
    chunks = await collect(provider(), make_call())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:5]]
    assert words == ["Hello", " brave", " new", " world"]
    assert chunks[5]["choices"][0]["finish_reason"] == "stop"
    assert chunks[6]["choices"] == []
    # prompt: "Be brief." (2) + "Hello brave new world" (4)
    assert chunks[6]["usage"] == {"prompt_tokens": 6, "completion_tokens": 4,
                                  "total_tokens": 10}
    assert len({c["id"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"fake-up"}


async def test_gathered_completion_uses_scripted_text() -> None:
    g = Gatherer()
    for c in await collect(provider(text="Scripted reply here"), make_call()):
        g.add(c)
    done = g.completion()
    assert done["choices"][0]["message"]["content"] == "Scripted reply here"
    assert done["choices"][0]["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == 3


async def test_max_tokens_cuts_with_length() -> None:
    g = Gatherer()
    for c in await collect(provider(), make_call(max_tokens=2)):
        g.add(c)
    done = g.completion()
    assert done["choices"][0]["message"]["content"] == "Hello brave"
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 2


def test_fake_words_stop_sequence_and_limit() -> None:
    req = convert({"model": "m", "messages": [{"role": "user", "content": "one two. three"}],
                   "stop": ["."], "max_completion_tokens": 5}, ChatCompletionRequest)
    w = fake_words(FakeBehavior(), req)
    assert (w.words, w.finish_reason, w.stop_sequence) == (["one", " two"], "stop", ".")


async def test_pacing_ttft_and_tokens_per_s() -> None:
    p = provider(text="a b c d e", ttft_s=0.05, tokens_per_s=100)
    start = time.perf_counter()
    stamps = []
    async for _chunk in p.chat(make_call()):
        stamps.append(time.perf_counter() - start)
    assert stamps[0] >= 0.05  # nothing, not even the role chunk, before the TTFT
    assert stamps[-1] >= 0.05 + 4 / 100 * 0.9
    assert stamps[-1] < 0.5


async def test_scripted_errors_map_to_seawall_errors() -> None:
    with pytest.raises(RateLimited) as rl:
        await collect(provider(error_status=429, retry_after_s=3), make_call())
    assert rl.value.retry_after == 3 and rl.value.status == 429
    with pytest.raises(UpstreamError) as up:
        await collect(provider(error_status=503), make_call())
    assert (up.value.status, up.value.upstream_status) == (502, 503)
    with pytest.raises(InvalidRequest) as bad:
        await collect(provider(error_status=404), make_call())
    assert bad.value.status == 404


async def test_disconnect_after_chunks() -> None:
    p = provider(disconnect_after_chunks=2)
    got: list[Chunk] = []
    with pytest.raises(UpstreamError) as e:
        async for c in p.chat(make_call()):
            got.append(c)
    assert e.value.code == "upstream_disconnected"
    assert [c["choices"][0]["delta"].get("content") for c in got] == ["", "Hello", " brave"]
    assert (p.failed, p.completed, p.active) == (1, 0, 0)


async def test_aclose_stops_a_slow_stream_promptly() -> None:
    p = provider(text="w " * 1000, tokens_per_s=20)
    gen = p.chat(make_call())
    await gen.__anext__()  # role
    await gen.__anext__()  # first word
    start = time.perf_counter()
    await gen.aclose()
    assert time.perf_counter() - start < 0.05
    assert (p.cancelled, p.active, p.completed) == (1, 0, 0)


async def test_hang_is_cancellable() -> None:
    p = provider(hang=True)

    async def first() -> Chunk:
        return await p.chat(make_call()).__anext__()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(first(), 0.05)
    assert (p.cancelled, p.active) == (1, 0)


async def test_behavior_can_be_swapped_at_runtime() -> None:
    p = provider()
    p.behavior = FakeBehavior(text="changed")
    chunks = await collect(p, make_call())
    assert chunks[1]["choices"][0]["delta"]["content"] == "changed"


async def test_fake_words_stages() -> None:
    with pytest.raises(FakeFailure) as f:
        await FakeWords(FakeBehavior(error_status=500, retry_after_s=1), ["x"]).begin()
    assert (f.value.status, f.value.retry_after) == (500, 1)
    w = FakeWords(FakeBehavior(disconnect_after_chunks=1), ["a", " b"])
    assert await w.__anext__() == "a"
    with pytest.raises(FakeDisconnect):
        await w.__anext__()
    # a reply shorter than the cut point completes normally
    assert await FakeWords(FakeBehavior(disconnect_after_chunks=5), ["a"]).collect() == "a"


async def test_embed_is_deterministic_unit_vectors() -> None:
    p = provider()
    out = await p.embed(["hello world", "other", "hello world"], "fake-embed")
    assert out.vectors[0] == out.vectors[2] != out.vectors[1]
    assert len(out.vectors[0]) == 8
    assert math.isclose(sum(x * x for x in out.vectors[1]), 1.0)
    assert out.prompt_tokens == 5
    assert fake_vector("x", 32) == fake_vector("x", 32)
    with pytest.raises(RateLimited):
        await provider(error_status=429).embed(["x"], "m")


# -- chaos fields ---------------------------------------------------------------


def scripted(seed: int | None = None, **behavior: Any) -> FakeProvider:
    """A provider running ``FakeBehavior(**behavior)`` (the settings model does
    not carry every behaviour field)."""
    p = FakeProvider("fake", FakeProviderSettings(type="fake"), seed=seed)
    p.behavior = FakeBehavior(**behavior)
    return p


@pytest.mark.parametrize(("fields", "message"), [
    ({"malformed_after_chunks": -1}, "malformed_after_chunks must be >= 0"),
    ({"stall_after_chunks": -2}, "stall_after_chunks must be >= 0"),
    ({"disconnect_after_chunks": 1, "stall_after_chunks": 2}, "at most one of"),
    ({"malformed_after_chunks": 0, "stall_after_chunks": 0}, "at most one of"),
    ({"error_status": 503, "error_probability": 1.5}, "between 0 and 1"),
    ({"error_status": 503, "error_probability": float("nan")}, "between 0 and 1"),
    ({"error_probability": 0.5}, "needs error_status"),
    ({"prefill_tokens_per_s": -1.0}, "prefill_tokens_per_s must be >= 0"),
    ({"headers": {"bad name": "x"}}, "not a valid HTTP header name"),
    ({"headers": {"x-a": "one\r\ntwo"}}, "one-line string"),
    ({"headers": {"Content-Length": "3"}}, "cannot be scripted"),
])
def test_new_fields_are_validated(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FakeBehavior(**fields)
    with pytest.raises(ValueError, match=message):  # and through the JSON route
        FakeBehavior.from_dict(fields)


def test_new_fields_default_off_and_round_trip() -> None:
    d = FakeBehavior().to_dict()
    assert {k: d[k] for k in ("malformed_after_chunks", "stall_after_chunks", "headers",
                              "error_probability", "fill_max_tokens",
                              "prefill_tokens_per_s")} == {
        "malformed_after_chunks": None, "stall_after_chunks": None, "headers": {},
        "error_probability": 1.0, "fill_max_tokens": False, "prefill_tokens_per_s": 0.0}
    b = FakeBehavior(malformed_after_chunks=2, headers={"x-ratelimit-remaining-requests": "0"},
                     error_status=429, error_probability=0.1, fill_max_tokens=True,
                     prefill_tokens_per_s=500.0)
    assert FakeBehavior.from_dict(b.to_dict()) == b
    assert FakeBehavior.from_dict({"stall_after_chunks": 3}).stall_after_chunks == 3
    assert FakeBehavior().headers is not FakeBehavior().headers  # no shared mutable default
    with pytest.raises(ValueError, match="headers"):
        FakeBehavior.from_dict({"headers": ["x-a"]})


async def test_malformed_after_chunks_raises_bad_response() -> None:
    p = scripted(malformed_after_chunks=2)
    got: list[Chunk] = []
    with pytest.raises(UpstreamError) as e:
        async for c in p.chat(make_call()):
            got.append(c)
    assert e.value.code == "upstream_bad_response"
    assert "after 2 chunk(s)" in e.value.message
    assert [c["choices"][0]["delta"].get("content") for c in got] == ["", "Hello", " brave"]
    assert (p.failed, p.completed, p.cancelled, p.active) == (1, 0, 0, 0)
    # a reply shorter than the cut point completes normally
    short = scripted(malformed_after_chunks=5)
    assert len(await collect(short, make_call())) == 7
    assert (short.completed, short.failed) == (1, 0)


async def test_malformed_and_stalled_embeddings() -> None:
    with pytest.raises(UpstreamError) as e:
        await scripted(malformed_after_chunks=3).embed(["x"], "m")
    assert e.value.code == "upstream_bad_response"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(scripted(stall_after_chunks=3).embed(["x"], "m"), 0.05)


async def test_stall_after_chunks_goes_silent_until_cancelled() -> None:
    p = scripted(stall_after_chunks=1)
    gen = p.chat(make_call())
    first = [await gen.__anext__(), await gen.__anext__()]
    assert [c["choices"][0]["delta"]["content"] for c in first] == ["", "Hello"]
    start = time.perf_counter()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gen.__anext__(), 0.1)
    assert time.perf_counter() - start < 0.3  # the cancellation ended it at once
    assert (p.cancelled, p.active, p.completed, p.failed) == (1, 0, 0, 0)


async def test_stall_is_closed_promptly_by_aclose() -> None:
    p = scripted(stall_after_chunks=0)
    gen = p.chat(make_call())
    await gen.__anext__()  # the role chunk comes before any content
    pending = asyncio.ensure_future(gen.__anext__())
    await asyncio.sleep(0.02)
    assert not pending.done() and p.active == 1
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    await gen.aclose()
    assert (p.cancelled, p.active) == (1, 0)


async def outcomes(p: FakeProvider, n: int) -> list[bool]:
    """Whether each of ``n`` calls failed with the scripted error."""
    out = []
    for _ in range(n):
        try:
            await collect(p, make_call())
            out.append(False)
        except UpstreamError as e:
            assert e.upstream_status == 503
            out.append(True)
    return out


async def test_error_probability_is_seeded_and_per_request() -> None:
    rng = random.Random(7)
    expected = [rng.random() < 0.3 for _ in range(40)]
    p = scripted(seed=7, error_status=503, error_probability=0.3)
    got = await outcomes(p, 40)
    assert got == expected
    assert 0 < sum(got) < 40  # both outcomes happen: this is really random per request
    assert (p.failed, p.completed) == (sum(expected), 40 - sum(expected))
    p.reseed(7)
    assert await outcomes(p, 40) == expected


async def test_error_probability_edges_leave_the_rng_alone() -> None:
    never = scripted(seed=1, error_status=503, error_probability=0.0)
    always = scripted(seed=1, error_status=503, error_probability=1.0)
    assert await outcomes(never, 5) == [False] * 5
    assert await outcomes(always, 5) == [True] * 5
    fresh = random.Random(1).random()
    assert never.rng.random() == always.rng.random() == fresh


async def test_fill_max_tokens_follows_the_limit() -> None:
    p = scripted(fill_max_tokens=True, text="ignored when there is a limit")
    g = Gatherer()
    for c in await collect(p, make_call(max_tokens=10)):
        g.add(c)
    done = g.completion()
    assert done["choices"][0]["message"]["content"] == (
        "lorem ipsum dolor sit amet consectetur adipiscing elit lorem ipsum")
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 10
    req = make_call(max_completion_tokens=3, stop=["o"]).request  # stop sequences ignored
    assert fake_words(p.behavior, req).words == ["lorem", " ipsum", " dolor"]
    no_limit = fake_words(p.behavior, make_call().request)
    assert (no_limit.words, no_limit.finish_reason) == (split_words(
        "ignored when there is a limit"), "stop")


async def test_prefill_adds_prompt_words_to_ttft() -> None:
    b = FakeBehavior(ttft_s=0.01, prefill_tokens_per_s=100)
    call = make_call(" ".join(["w"] * 8))  # + "Be brief." = 10 prompt words
    assert fake_words(b, call.request).ttft_s == pytest.approx(0.01 + 10 / 100)
    assert fake_words(FakeBehavior(ttft_s=0.01), call.request).ttft_s == 0.01
    p = scripted(ttft_s=0.01, prefill_tokens_per_s=100)
    start = time.perf_counter()
    await p.chat(call).__anext__()
    assert 0.11 <= time.perf_counter() - start < 0.3


async def _gathered(p: FakeProvider, call: ChatCall) -> dict[str, Any]:
    g = Gatherer()
    async for item in p.chat(call):
        g.add_item(item)
    return g.completion()


async def test_n_choices_logprobs_and_usage() -> None:
    out = await _gathered(provider(), make_call("one two", n=3, logprobs=True, top_logprobs=2))
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    for c in out["choices"]:
        assert c["message"]["content"] == "one two"
        lp = c["logprobs"]["content"]
        assert [e["token"] for e in lp] == ["one", " two"]
        assert all(len(e["top_logprobs"]) == 2 and e["logprob"] < 0 for e in lp)
    assert out["usage"]["completion_tokens"] == 6
    plain = await _gathered(provider(), make_call("one two"))
    assert plain["choices"][0]["logprobs"] is None and len(plain["choices"]) == 1


@pytest.mark.parametrize("content,choice,called", [
    ("what is the weather in Paris?", None, "get_weather"),
    ("hello", None, None),
    ("hello", "required", "get_weather"),
    ("hello", {"type": "function", "function": {"name": "other"}}, "other"),
    ("what is the weather?", "none", None),
])
async def test_tools_are_answered_like_the_fake_upstream(
        content: str, choice: Any, called: str | None) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather"}},
             {"type": "function", "function": {"name": "other"}}]
    extra: dict[str, Any] = {"tools": tools}
    if choice is not None:
        extra["tool_choice"] = choice
    out = await _gathered(provider(), make_call(content, **extra))
    choice0 = out["choices"][0]
    if called is None:
        assert "tool_calls" not in choice0["message"] and choice0["finish_reason"] == "stop"
    else:
        assert choice0["finish_reason"] == "tool_calls"
        (tc,) = choice0["message"]["tool_calls"]
        assert tc["function"] == {"name": called, "arguments": '{"city": "Paris"}'}


@pytest.mark.parametrize("choice,called", [(None, None), ("required", "get_weather")])
async def test_a_tool_result_is_answered_not_called_again(choice: Any, called: str | None
                                                          ) -> None:
    """An agent sends the tool's result back: the fake then answers (unless a tool
    is required), so an agent loop ends as it would with a real model."""
    raw: dict[str, Any] = {"model": "fake", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}], "messages": [
        {"role": "user", "content": "what is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"}]}
    if choice is not None:
        raw["tool_choice"] = choice
    call = ChatCall(request=convert(raw, ChatCompletionRequest), raw=raw, model="fake-up",
                    stream=True)
    choice0 = (await _gathered(provider(), call))["choices"][0]
    calls = choice0["message"].get("tool_calls") or []
    assert [tc["function"]["name"] for tc in calls] == ([called] if called else [])


async def test_token_id_inputs_embed_as_their_ids() -> None:
    p = provider()
    e = await p.embed([[1, 2, 3], [1, 2, 3], [4]], "fake-embed")
    assert e.vectors[0] == e.vectors[1] != e.vectors[2]
