"""The in-process llama.cpp provider with the real SmolLM2-135M model.

The model loads once for the module (~0.2 s); every test shares one event
loop with it because its instance pool, like the server's, lives on one loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from seawall.api.wire import ChatCompletionRequest, Message, convert
from seawall.config import LocalProviderSettings
from seawall.errors import InvalidRequest, ServiceUnavailable
from seawall.providers.base import ChatCall, Chunk, Gatherer
from seawall.providers.local import LocalProvider, to_llama_messages

slow = pytest.mark.slow
module_loop = pytest.mark.asyncio(loop_scope="module")

# Greedy decoding of this prompt runs to any max_tokens we set (checked: >1500),
# so a generation that ends early did so because we stopped it.
LONG_PROMPT = "Write a very long essay about the history of the ocean."


def settings(**values: Any) -> LocalProviderSettings:
    return LocalProviderSettings.model_validate({"type": "local", **values})


def call_for(content: str | list[dict[str, Any]], **params: Any) -> ChatCall:
    raw = {"model": "local", "messages": [{"role": "user", "content": content}], **params}
    request = convert(raw, ChatCompletionRequest)
    return ChatCall(request=request, raw=raw, model="SmolLM2-135M-Instruct",
                    stream=bool(params.get("stream")))


async def collect(provider: LocalProvider, call: ChatCall) -> list[Chunk]:
    return [c async for c in provider.chat(call)]


async def wait_idle(provider: LocalProvider, limit_s: float = 5.0) -> float:
    """Seconds until every producer thread has ended and returned its instance."""
    start = time.perf_counter()
    while provider.active_generations:
        if time.perf_counter() - start > limit_s:
            raise AssertionError(f"generation still running after {limit_s}s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider() -> AsyncIterator[LocalProvider]:
    p = LocalProvider("local", settings())
    assert not p.status().ready  # constructing loads nothing
    await p.start()
    yield p
    await p.close()


# -- message conversion (no model needed) ----------------------------------------------------

def test_messages_become_plain_template_input() -> None:
    msgs = convert({"model": "m", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "part one"},
                                     {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]}, ChatCompletionRequest).messages
    assert to_llama_messages(msgs) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "part one\npart two"},
        {"role": "assistant", "content": "Called tools: lookup({\"q\": 1})"},
        {"role": "user", "content": "Tool result (c1):\n42"},
    ]


def test_non_text_parts_are_rejected_with_their_path() -> None:
    msgs = [Message(role="user", content=[
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])]
    with pytest.raises(InvalidRequest) as info:
        to_llama_messages(msgs)
    assert info.value.param == "messages[0].content[1]"


def test_bad_model_path_fails_at_construction(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError, match=r"providers\.local\.model_path"):
        LocalProvider("local", settings(model_path=str(tmp_path / "x.gguf")))


async def test_chat_before_start_is_unavailable() -> None:
    p = LocalProvider("local", settings())
    with pytest.raises(ServiceUnavailable) as info:
        await collect(p, call_for("hi"))
    assert info.value.retry_after == 1


# -- real generation ---------------------------------------------------------------------------

@slow
@module_loop
async def test_short_completion_streams_content_and_usage(provider: LocalProvider) -> None:
    status = provider.status()
    assert status.ready and status.extra["instances"] == 1 and status.extra["idle"] == 1
    chunks = await collect(provider, call_for("Say hello.", max_tokens=8, temperature=0))
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["model"] for c in chunks} == {"SmolLM2-135M-Instruct"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert 1 <= usage["completion_tokens"] <= 8
    # SmolLM2's template adds a default system prompt: the count is the rendered prompt's.
    assert usage["prompt_tokens"] > 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    await wait_idle(provider)
    assert provider.status().extra["idle"] == 1


@slow
@module_loop
async def test_gathered_chunks_form_a_chat_completion(provider: LocalProvider) -> None:
    g = Gatherer()
    async for chunk in provider.chat(call_for("What is 2+2?", max_tokens=8, temperature=0)):
        g.add(chunk)
    completion = g.completion()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "SmolLM2-135M-Instruct"
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    assert completion["usage"]["completion_tokens"] >= 1


@slow
@module_loop
async def test_prompt_tokens_are_exact(provider: LocalProvider) -> None:
    # After a greedy run that hits max_tokens, llama has evaluated the prompt and
    # every sampled token except the last: n_tokens = prompt + completion - 1.
    chunks = await collect(provider, call_for(LONG_PROMPT, max_tokens=16, temperature=0))
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 16
    llama = provider._instances[0].llama
    assert llama.n_tokens == usage["prompt_tokens"] + 16 - 1


@slow
@module_loop
@pytest.mark.parametrize(("prompt", "max_tokens", "stop"), [
    ("Say hello.", 200, []),                          # ends with EOS
    ("Reply with many emoji only: \U0001f30a", 30, []),  # multi-byte: deltas carry >1 token
    ("Write a haiku about the sea.", 100, ["ocean"]),  # ends on a stop sequence
])
async def test_usage_matches_llamas_own_non_streaming_count(
        provider: LocalProvider, prompt: str, max_tokens: int, stop: list[str]) -> None:
    # The instance is idle between requests, so the test may use it directly as the
    # reference. Reset its KV cache before each run: a reused prompt prefix changes
    # the logits slightly, and so the greedy text.
    llama = provider._instances[0].llama
    await wait_idle(provider)
    llama.reset()
    g = Gatherer()
    async for chunk in provider.chat(call_for(prompt, max_tokens=max_tokens, temperature=0,
                                              stop=stop)):
        g.add(chunk)
    await wait_idle(provider)
    llama.reset()
    reference = llama.create_chat_completion(
        messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0, stop=stop)
    assert g.text == reference["choices"][0]["message"]["content"]
    assert g.usage == reference["usage"]


@slow
@module_loop
async def test_concurrent_requests_wait_for_the_single_instance(provider: LocalProvider) -> None:
    order: list[str] = []

    async def run(tag: str) -> list[Chunk]:
        out = []
        async for c in provider.chat(call_for(f"Tell me about {tag}.", max_tokens=12)):
            if c["choices"] and c["choices"][0]["delta"].get("content"):
                order.append(tag)
            out.append(c)
        return out

    a, b = await asyncio.gather(run("cats"), run("dogs"))
    assert a[-1]["usage"]["completion_tokens"] >= 1
    assert b[-1]["usage"]["completion_tokens"] >= 1
    # One instance: the second request's tokens all come after the first's.
    first = order[0]
    assert order == [first] * order.count(first) + [t for t in order if t != first]
    await wait_idle(provider)
    assert provider.status().extra["idle"] == 1


@slow
@module_loop
async def test_closing_the_stream_stops_generation(provider: LocalProvider) -> None:
    stream = provider.chat(call_for(LONG_PROMPT, max_tokens=1500, temperature=0))
    assert isinstance(stream, AsyncIterator)
    async for chunk in stream:
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            break
    assert provider.active_generations == 1
    await stream.aclose()  # type: ignore[attr-defined]  # the client hung up
    # Uncancelled, 1500 tokens take ~15 s on two cores; stopping takes one token.
    stopped_in = await wait_idle(provider, limit_s=5)
    assert stopped_in < 2.0
    assert provider.status().extra["idle"] == 1
    started = time.perf_counter()
    chunks = await collect(provider, call_for("Say hi.", max_tokens=4))
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    assert time.perf_counter() - started < 5


@slow
@module_loop
async def test_cancelling_the_consumer_task_frees_the_instance(provider: LocalProvider) -> None:
    got_first = asyncio.Event()

    async def consume() -> None:
        async for chunk in provider.chat(call_for(LONG_PROMPT, max_tokens=1500, temperature=0)):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_idle(provider, limit_s=5) < 2.0
    assert provider.status().extra["idle"] == 1


@slow
@module_loop
async def test_prompt_longer_than_context_is_a_client_error(provider: LocalProvider) -> None:
    with pytest.raises(InvalidRequest) as info:
        await collect(provider, call_for("word " * 3000, max_tokens=4))
    assert info.value.code == "context_length_exceeded"
    await wait_idle(provider)
    assert provider.status().extra["idle"] == 1


@slow
@module_loop
async def test_tools_are_refused_before_queueing(provider: LocalProvider) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(InvalidRequest) as info:
        await collect(provider, call_for("hi", tools=[tool]))
    assert info.value.code == "tools_not_supported"
    chunks = await collect(provider, call_for("hi", tools=[tool], tool_choice="none",
                                              max_tokens=2))
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


@slow
@module_loop
async def test_stop_sequences_and_json_mode(provider: LocalProvider) -> None:
    free, stopped = Gatherer(), Gatherer()
    for chunk in await collect(provider, call_for("Write a haiku about the sea.",
                                                  max_tokens=24, temperature=0)):
        free.add(chunk)
    word = free.text.split()[3]  # a word the greedy answer is known to contain
    for chunk in await collect(provider, call_for("Write a haiku about the sea.",
                                                  max_tokens=24, temperature=0, stop=[word])):
        stopped.add(chunk)
    assert word not in stopped.text and free.text.startswith(stopped.text)
    assert stopped.completion()["choices"][0]["finish_reason"] == "stop"
    g = Gatherer()
    async for chunk in provider.chat(call_for("Give a JSON object with a key 'a'.",
                                              max_tokens=24, temperature=0,
                                              response_format={"type": "json_object"})):
        g.add(chunk)
    assert g.text.lstrip().startswith("{")


@slow
async def test_pool_of_two_runs_two_generations_at_once() -> None:
    p = LocalProvider("local2", settings(max_concurrency=2, n_threads=1))
    await p.start()
    try:
        assert p.status().extra["instances"] == 2
        streams = [p.chat(call_for(LONG_PROMPT, max_tokens=200, temperature=0))
                   for _ in range(2)]
        firsts = await asyncio.gather(*(anext(s) for s in streams))
        assert len(firsts) == 2 and p.active_generations == 2
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]
        await wait_idle(p)
        assert p.status().extra["idle"] == 2
    finally:
        await p.close()
