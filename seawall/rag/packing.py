"""Context packing: choose which retrieved chunks the model sees, within a
token budget, and render them into the prompt.

Best first: the ranking's order is kept, because models attend most to what
comes first and a cut budget should cost the weakest chunk. A chunk that
mostly repeats one already chosen (the overlap between neighbouring chunks,
or the same passage reached twice) is skipped; one that does not fit the
remaining budget is skipped for a smaller one further down. Each chosen chunk
gets a number the model cites as ``[n]``; the numbers map back to sources in
the response's ``citations``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seawall.rag.store import ChunkRow, breadcrumb

__all__ = ["Source", "cited_numbers", "pack", "render"]

# A chunk sharing more than this share of its span with a chosen chunk of the
# same document is a near-repeat.
MAX_SHARED = 0.5


@dataclass(slots=True)
class Source:
    number: int  # what the model cites: [number]
    chunk: ChunkRow
    score: float
    tokens: int  # of its rendered block

    def citation(self, cited: bool | None = None) -> dict[str, Any]:
        c = self.chunk
        out: dict[str, Any] = {
            "index": self.number, "chunk_id": c.id, "document_id": c.document_id,
            "source": c.source, "title": c.title, "heading_path": c.heading_path,
            "start": c.start, "end": c.end, "score": round(self.score, 6)}
        if c.page is not None:
            out["page"] = c.page
        if cited is not None:
            out["cited"] = cited
        return out


def _label(chunk: ChunkRow) -> str:
    where = breadcrumb(chunk.title, chunk.heading_path)
    return f"{where} ({chunk.source})" if where else chunk.source


def _block(number: int, chunk: ChunkRow) -> str:
    return f"[{number}] {_label(chunk)}\n{chunk.text.strip()}"


def _shared(a: ChunkRow, b: ChunkRow) -> float:
    """Share of ``a``'s span that ``b`` covers (0 across documents)."""
    if a.document_id != b.document_id:
        return 0.0
    overlap = min(a.end, b.end) - max(a.start, b.start)
    return max(0, overlap) / max(1, a.end - a.start)


def pack(ranked: Sequence[tuple[ChunkRow, float]], budget: int, max_sources: int,
         count: Callable[[str], int]) -> list[Source]:
    """The chunks to show, best first, numbered from 1, within ``budget`` tokens."""
    chosen: list[Source] = []
    left = budget
    for chunk, score in ranked:
        if len(chosen) >= max_sources or left <= 0:
            break
        if any(_shared(chunk, s.chunk) > MAX_SHARED for s in chosen):
            continue
        tokens = count(_block(len(chosen) + 1, chunk)) + 2  # + the blank line between blocks
        if tokens > left:
            continue
        chosen.append(Source(len(chosen) + 1, chunk, score, tokens))
        left -= tokens
    return chosen


def render(template: str, sources: Sequence[Source]) -> str:
    """The system message: ``template`` with ``{context}`` replaced by the
    numbered sources (plain replacement, so braces elsewhere stay as written)."""
    context = "\n\n".join(_block(s.number, s.chunk) for s in sources)
    return template.replace("{context}", context or "(no sources found)")


_CITE = re.compile(r"\[(\d{1,3})\]")


def cited_numbers(answer: str) -> set[int]:
    """The source numbers an answer cites as [n]."""
    return {int(m) for m in _CITE.findall(answer)}
