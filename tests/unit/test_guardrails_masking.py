"""Masking and restoring: placeholders split anywhere across chunks, tool-call
arguments, several choices, the whole answer for output policies, and the
trace-record redactor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from seawall.config import GuardrailSettings
from seawall.guardrails.detectors import DETECTORS, finders, scan
from seawall.guardrails.masking import StreamRestorer, Vault
from seawall.guardrails.policy import Policies
from seawall.guardrails.redact import NOT_SCANNED, RecordRedactor
from seawall.guardrails.stage import _restored
from seawall.providers.base import RawBatch, StreamItem

TEXT = "Mail ana@example.com or bob@example.org, and ana@example.com again; call +1 415-555-2671."


def masked_vault() -> tuple[Vault, str]:
    vault = Vault()
    masked = vault.mask(TEXT, scan(TEXT, finders(DETECTORS)))
    return vault, masked


def test_same_value_same_placeholder() -> None:
    vault, masked = masked_vault()
    assert masked == ("Mail <EMAIL_1> or <EMAIL_2>, and <EMAIL_1> again; call <PHONE_1>.")
    assert vault.restore(masked) == TEXT


@pytest.mark.parametrize("cut", range(1, 70))
def test_a_placeholder_split_at_any_point_is_restored(cut: int) -> None:
    vault, masked = masked_vault()
    r = StreamRestorer(vault)
    out = r.feed((0, -1), masked[:cut]) + r.feed((0, -1), masked[cut:]) + r.flush((0, -1))
    assert out == TEXT


def test_one_character_chunks() -> None:
    vault, masked = masked_vault()
    r = StreamRestorer(vault)
    out = "".join(r.feed((0, -1), ch) for ch in masked) + r.flush((0, -1))
    assert out == TEXT


def test_only_a_possible_placeholder_is_held_back() -> None:
    vault, _ = masked_vault()
    r = StreamRestorer(vault)
    assert r.feed((0, -1), "a < b and <EM") == "a < b and "  # "<EM" may become <EMAIL_1>
    assert r.feed((0, -1), "PHASIS>") == "<EMPHASIS>"  # it did not: let through at once
    assert r.feed((0, -1), "x <div>") == "x <div>"
    assert not r.pending


def chunk(content: str | None = None, finish: str | None = None, index: int = 0,
          calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if calls is not None:
        delta["tool_calls"] = calls
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


async def _stream(items: list[StreamItem]) -> AsyncIterator[StreamItem]:
    for item in items:
        yield item


def run(vault: Vault, items: list[StreamItem]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for item in _restored(vault, _stream(items)):
            out.extend(item if isinstance(item, list) else [item])
        return out
    return asyncio.run(go())


def text_of(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]
                   if ch["index"] == index)


def test_stream_with_several_choices_and_a_finish() -> None:
    vault, masked = masked_vault()
    items: list[StreamItem] = [chunk(masked[:8], index=0), chunk(masked[:12], index=1),
                               [chunk(masked[8:], index=0), chunk(masked[12:], index=1)],
                               chunk(finish="stop", index=0), chunk(finish="stop", index=1)]
    out = run(vault, items)
    assert text_of(out, 0) == TEXT and text_of(out, 1) == TEXT


def test_held_text_is_flushed_at_the_finish() -> None:
    vault, _ = masked_vault()
    out = run(vault, [chunk("see <EMAIL"), chunk(None, finish="stop")])
    assert text_of(out) == "see <EMAIL"


def test_held_text_is_flushed_when_the_stream_ends_without_a_finish() -> None:
    vault, _ = masked_vault()
    out = run(vault, [chunk("see <EMAIL")])
    assert text_of(out) == "see <EMAIL"


def test_tool_call_arguments_are_restored() -> None:
    vault, _ = masked_vault()
    calls = [{"index": 0, "function": {"arguments": '{"to": "<EMA'}}]
    more = [{"index": 0, "function": {"arguments": 'IL_2>"}'}}]
    out = run(vault, [chunk(calls=calls), chunk(calls=more), chunk(finish="tool_calls")])
    args = "".join(c["function"]["arguments"] for ch in out for choice in ch["choices"]
                   for c in choice["delta"].get("tool_calls") or [])
    assert args == '{"to": "bob@example.org"}'


def test_raw_batches_are_not_changed_in_place() -> None:
    vault, _ = masked_vault()
    original = [chunk("hi <EMAIL_1>")]
    batch = RawBatch(original, b"data: {}\n\n")

    async def go() -> list[StreamItem]:
        return [item async for item in _restored(vault, _stream([batch]))]

    out = asyncio.run(go())
    assert original[0]["choices"][0]["delta"]["content"] == "hi <EMAIL_1>"
    assert not isinstance(out[0], RawBatch)  # a changed batch is encoded afresh
    assert text_of(out[0]) == "hi ana@example.com"  # type: ignore[arg-type]


def test_record_redactor_copies_and_caps() -> None:
    settings = GuardrailSettings(max_scan_chars=200)
    redact = RecordRedactor(settings, Policies(settings))
    messages = [{"role": "user", "content": "mail ana@example.com"}]
    out_in, out_out, rag = asyncio.run(redact(messages, "call +1 415-555-2671", None))
    assert out_in == [{"role": "user", "content": "mail [REDACTED:email]"}]
    assert out_out == "call [REDACTED:phone]"
    assert messages[0]["content"] == "mail ana@example.com"  # the live request is untouched
    long = [{"role": "user", "content": "x" * 300 + " ana@example.com"}]
    out_in, _, _ = asyncio.run(redact(long, None, None))
    assert "ana@example.com" not in str(out_in) and NOT_SCANNED in str(out_in)


def test_record_redactor_leaves_clean_records_as_they_are() -> None:
    settings = GuardrailSettings()
    redact = RecordRedactor(settings, Policies(settings))
    messages = [{"role": "user", "content": "hello"}]
    out_in, out_out, _ = asyncio.run(redact(messages, "hi", None))
    assert out_in is messages and out_out == "hi"


def test_policy_layers_key_over_model_over_global() -> None:
    settings = GuardrailSettings.model_validate({
        "input": {"email": "flag", "ip": "flag"},
        "models": {"m": {"input": {"email": "mask"}}},
        "keys": {"k": {"input": {"email": "block", "ip": "off"}}},
    })
    p = Policies(settings)
    assert p.of("other", None).input.actions == {"email": "flag", "ip": "flag"}
    assert p.of("m", None).input.actions == {"email": "mask", "ip": "flag"}
    assert p.of("m", "k").input.actions == {"email": "block"}
    assert not Policies(GuardrailSettings()).of("m", "k").active


def test_long_texts_are_scanned_off_the_event_loop() -> None:
    import threading

    from seawall.guardrails.detectors import Finding
    from seawall.guardrails.scanner import scan_texts

    where: list[str] = []

    def spy(text: str) -> Any:  # a detector that notes the thread it runs on
        where.append(threading.current_thread().name)
        return iter([Finding("email", 0, 1)])

    async def go() -> None:
        await scan_texts(["short text"], [spy], 1000, thread_chars=100)
        await scan_texts(["x" * 500], [spy], 1000, thread_chars=100)

    asyncio.run(go())
    main = threading.main_thread().name
    assert where[0] == main and where[1] != main


def test_scan_budget_is_shared_by_all_texts() -> None:
    from seawall.guardrails.scanner import scan_all

    find = finders(["email"])
    found, skipped = scan_all(["a@b.co is " * 10, "c@d.co"], find, 50)
    assert len(found[0]) == 5 and found[1] == [] and skipped == 50 + 6  # 5 fit in 50 chars


def test_remask_puts_placeholders_back() -> None:
    vault, masked = masked_vault()
    assert vault.remask(TEXT) == masked


def test_what_counts_as_a_possible_placeholder() -> None:
    vault, _ = masked_vault()  # EMAIL_1, EMAIL_2, PHONE_1
    held = {t: vault.partial_at(t) < len(t) for t in (
        "x <", "x <E", "x <EMAIL_", "x <EMAIL_2", "x <PHONE", "x <EMAIL_12", "x <EMPH",
        "x <CREDIT_", "x <email_1", "x <EMAIL_1>")}
    assert held == {"x <": True, "x <E": True, "x <EMAIL_": True, "x <EMAIL_2": True,
                    "x <PHONE": True, "x <EMAIL_12": False, "x <EMPH": False,
                    "x <CREDIT_": False, "x <email_1": False, "x <EMAIL_1>": False}
