"""Scanning many strings at once, bounded and off the event loop when large."""

from __future__ import annotations

import asyncio

from seawall.guardrails.detectors import Find, Finding, scan


def scan_all(texts: list[str], find: list[Find], budget: int) -> tuple[list[list[Finding]], int]:
    """Findings per text, scanning at most ``budget`` characters in all;
    also returns how many characters were left unscanned."""
    out: list[list[Finding]] = []
    left = budget
    skipped = 0
    for text in texts:
        if left <= 0:
            out.append([])
            skipped += len(text)
            continue
        if len(text) > left:
            part = text[:left]
            hits = [f for f in scan(part, find) if f.end < len(part)]  # the cut may split one
            skipped += len(text) - left
            left = 0
            out.append(hits)
            continue
        left -= len(text)
        out.append(scan(text, find))
    return out, skipped


async def scan_texts(texts: list[str], find: list[Find], budget: int,
                     thread_chars: int) -> tuple[list[list[Finding]], int]:
    """:func:`scan_all`, in a worker thread when the texts are long."""
    if not find:
        return [[] for _ in texts], 0
    total = sum(len(t) for t in texts)
    if total > thread_chars:
        return await asyncio.to_thread(scan_all, texts, find, budget)
    return scan_all(texts, find, budget)
