"""Offline token counting: real tiktoken encodings built from the bpe-openai wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from seawall.ml import tokens
from seawall.ml.tokens import TokenCounter, encoding_for_model, load_encoding

# The example from OpenAI's cookbook "How to count tokens with tiktoken", whose
# published prompt_tokens are 129 (gpt-3.5-turbo / gpt-4) and 124 (gpt-4o).
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that "
     "translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user",
     "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant",
     "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user",
     "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
     "for increased leverage."},
    {"role": "system", "name": "example_assistant",
     "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean "
     "for the client deliverable."},
]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_known_counts(encoding: str) -> None:
    counter = TokenCounter(encoding)
    assert counter.count("hello world") == 2
    assert counter.count("tiktoken is great!") == 6
    assert counter.count("") == 0


def test_known_token_ids() -> None:
    assert load_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert load_encoding("cl100k_base").encode("hello world") == [15339, 1917]


def test_special_token_text_counts_as_plain_text() -> None:
    # A user typing "<|endoftext|>" must not raise nor collapse to one token.
    assert TokenCounter().count("<|endoftext|>") > 1


@pytest.mark.parametrize(("encoding", "expected"), [("cl100k_base", 129), ("o200k_base", 124)])
def test_count_messages_matches_openai_cookbook(encoding: str, expected: int) -> None:
    assert TokenCounter(encoding).count_messages(COOKBOOK_MESSAGES) == expected


def test_count_messages_accounting() -> None:
    c = TokenCounter()
    one = [{"role": "user", "content": "hello world"}]
    # 3 per message + role ("user" = 1) + content (2) + 3 reply priming
    assert c.count_messages(one) == 3 + 1 + 2 + 3
    assert c.count_messages([]) == 3


def test_message_counts_are_remembered_per_encoding_and_long_texts_are_not() -> None:
    o200k, cl100k = TokenCounter("o200k_base"), TokenCounter("cl100k_base")
    system = "You are a terse assistant. " * 40  # a system prompt, sent on every request
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    expected = 3 + 2 * 3 + o200k.count("system") + o200k.count(system) + \
        o200k.count("user") + o200k.count("hi")
    first = o200k.count_messages(messages)
    hits = tokens._count_cached.cache_info().hits
    assert o200k.count_messages(messages) == first == expected
    assert tokens._count_cached.cache_info().hits >= hits + 4  # every part came from memory
    # Each encoding counts for itself (cl100k splits this text differently).
    assert cl100k.count_messages(messages) == 3 + 2 * 3 + sum(
        cl100k.count(t) for t in ("system", system, "user", "hi"))
    # Past the size bound a text is counted every time and never held.
    long = "word " * (tokens.MESSAGE_CACHE_CHARS // 5 + 10)
    size = tokens._count_cached.cache_info().currsize
    assert o200k.count_messages([{"role": "user", "content": long}]) == \
        3 + 3 + o200k.count("user") + o200k.count(long)
    assert tokens._count_cached.cache_info().currsize == size  # "user" was held already


def test_count_messages_content_parts_count_text_only() -> None:
    c = TokenCounter()
    as_string = [{"role": "user", "content": "hello world"}]
    as_parts = [{"role": "user", "content": [
        {"type": "text", "text": "hello world"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}]
    assert c.count_messages(as_parts) == c.count_messages(as_string)
    no_content = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}]
    assert c.count_messages(no_content) > c.count_messages([{"role": "assistant"}])


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"),
    ("o1-mini", "o200k_base"), ("o3", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
    ("gpt-5", "o200k_base"), ("openai/gpt-4o", "o200k_base"),
    ("ft:gpt-4o-mini:acme::abc", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"),
    ("llama-3-8b", "o200k_base"), ("SmolLM2-135M-Instruct", "o200k_base"),
])
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert encoding_for_model(model) == encoding
    assert TokenCounter.for_model(model).encoding_name == encoding


def test_unknown_encoding_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="p50k_base"):
        TokenCounter("p50k_base")


def test_encodings_load_once_per_process() -> None:
    a, b = TokenCounter(), TokenCounter()
    a.warm_up()
    assert a.encoding is b.encoding is load_encoding("o200k_base")


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_definition_comes_from_tiktoken_and_matches_pinned_fallback(name: str) -> None:
    # tiktoken's own constructor is used (with our offline loader); the pinned
    # fallback must stay identical so a tiktoken upgrade cannot change counts.
    definition = tokens._definition_from_tiktoken(name)
    assert definition is not None
    pinned = tokens._FALLBACK_DEFINITIONS[name]
    assert definition["pat_str"] == pinned["pat_str"]
    assert definition["special_tokens"] == pinned["special_tokens"]


def test_works_with_no_network_in_a_fresh_process(tmp_path: object) -> None:
    """A new process whose sockets all fail and whose tiktoken cache is empty."""
    script = textwrap.dedent("""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network disabled by test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from seawall.ml.tokens import TokenCounter
        print(TokenCounter("o200k_base").count("hello world"),
              TokenCounter("cl100k_base").count("hello world"))
    """)
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    env.pop("DATA_GYM_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.split() == ["2", "2"]
    assert list(os.scandir(str(tmp_path))) == []  # nothing was cached or fetched
