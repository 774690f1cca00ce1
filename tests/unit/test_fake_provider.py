"""The in-process fake model: chunk shape, pacing, scripted failures, cancellation."""

from __future__ import annotations

import asyncio
import math
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
