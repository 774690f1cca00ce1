"""Trace-record redaction (on by default): a stored record never keeps a
detected value, only ``[REDACTED:<detector>]``.

Runs on the content as the record stores it (already cut at
``observe.traces.max_content_chars``), in a worker thread when long. Past
``guardrails.max_scan_chars`` in one record, the rest is not kept at all
rather than kept unscanned.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from seawall.config import GuardrailSettings
from seawall.guardrails.detectors import Finding
from seawall.guardrails.masking import redacted, replace
from seawall.guardrails.policy import Policies
from seawall.guardrails.scanner import scan_texts
from seawall.guardrails.texts import Slot, strings_in

NOT_SCANNED = "[seawall: not kept: past guardrails.max_scan_chars]"


class RecordRedactor:
    def __init__(self, settings: GuardrailSettings, policies: Policies) -> None:
        self.settings = settings
        self.find = policies.redaction()

    async def __call__(self, stored_input: Any, stored_output: str | None,
                       rag: dict[str, Any] | None) -> tuple[Any, str | None, dict[str, Any] | None]:
        """(input, output, rag) with detected values replaced; the objects
        given are never changed (the live request may still hold them)."""
        box: list[Any] = [stored_input, stored_output, rag]
        slots: list[Slot] = strings_in(box, [])
        if not slots:
            return stored_input, stored_output, rag
        texts = [b[k] for b, k in slots]
        s = self.settings
        found, skipped = await scan_texts(texts, self.find, s.max_scan_chars, s.thread_chars)
        if not skipped and not any(found):
            return stored_input, stored_output, rag
        if sum(map(len, texts)) > s.thread_chars:  # the copy grows with the record
            box = await asyncio.to_thread(self._apply, box, texts, found)
        else:
            box = self._apply(box, texts, found)
        return box[0], box[1], box[2]

    def _apply(self, box: list[Any], texts: list[str], found: list[list[Finding]]) -> list[Any]:
        return _apply_redaction(box, texts, found, self.settings.max_scan_chars)


def _apply_redaction(box: list[Any], texts: list[str], found: list[list[Finding]],
                     budget: int) -> list[Any]:
    box = copy.deepcopy(box)
    slots = strings_in(box, [])  # the same walk over the copy: same order
    for (b, k), text, hits in zip(slots, texts, found, strict=True):
        if budget <= 0:
            b[k] = NOT_SCANNED
            continue
        if len(text) > budget:
            b[k] = _redact(text[:budget], hits) + NOT_SCANNED
        elif hits:
            b[k] = _redact(text, hits)
        budget -= len(text)
    return box


def _redact(text: str, hits: list[Finding]) -> str:
    return replace(text, hits, lambda f, v: redacted(f.detector))
