"""Cut a :class:`LoadedDocument` into retrievable :class:`Chunk`s.

"structure" (the default) follows the document: headings open sections, a
chunk never spans two sections (so its heading path is exact), blocks are
packed whole, and only a block too big for one chunk is cut - at paragraph,
then sentence, then word boundaries; code and tables between lines, a table
repeating its header row. Cutting along structure keeps an answer's context
together, which is what retrieval quality depends on.

"fixed" is a plain sliding window over the text, kept as the baseline that
benchmarks compare "structure" against.

Each piece of text is counted once and sums estimate a chunk's size; only the
final chunk text is counted again, so chunking stays linear in document size.
Chunk offsets index into ``doc.text``; when every piece of a chunk is a span
of the document (always for Markdown, HTML, PDF and plain text), the chunk's
text is exactly ``doc.text[start:end]``. The one exception is a table piece
that repeats the table's header row.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from seawall.rag.documents import Block, Chunk, LoadedDocument

__all__ = ["ChunkOptions", "chunk_document"]

Counter = Callable[[str], int]


@dataclass(frozen=True)
class ChunkOptions:
    """How to cut documents; sizes are in tokens of the counter passed in."""

    strategy: Literal["structure", "fixed"] = "structure"
    max_tokens: int = 256
    overlap_tokens: int = 32
    min_tokens: int = 32

    def __post_init__(self) -> None:
        if self.strategy not in ("structure", "fixed"):
            raise ValueError(f"strategy must be 'structure' or 'fixed', not {self.strategy!r}")
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")
        if self.overlap_tokens < 0:
            raise ValueError(f"overlap_tokens must be >= 0, got {self.overlap_tokens}")
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than "
                f"max_tokens ({self.max_tokens})"
            )
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0 (0 = never merge), got {self.min_tokens}")


def chunk_document(doc: LoadedDocument, options: ChunkOptions, count: Counter) -> list[Chunk]:
    """Chunk one document; ``count`` returns the token count of a string."""
    if options.strategy == "fixed":
        chunks = _fixed(doc, options, count)
    else:
        chunks = _structure(doc, options, count)
    for i, chunk in enumerate(chunks):
        chunk.ordinal = i
    return chunks


# ------------------------------------------------------------------ splitting

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends with . ! ? (and closing quotes/brackets) before whitespace,
# unless a lowercase letter follows ("e.g. this" is not two sentences).
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*\s++(?![a-z])")
_LINE_BREAK = re.compile(r"\n")
_LIST_ITEM = re.compile(r"\n(?=[ \t]*(?:[-*+\u2022]|\d{1,9}[.)])[ \t]+)")
_WORD = re.compile(r"\S+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")

Span = tuple[int, int, int]  # start, end, tokens


def _trim(src: str, start: int, end: int) -> tuple[int, int]:
    while start < end and src[start].isspace():
        start += 1
    while end > start and src[end - 1].isspace():
        end -= 1
    return start, end


def _cut(src: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Split src[start:end] after each match of ``pattern``, trimmed, non-empty."""
    parts = []
    pos = start
    for m in pattern.finditer(src, start, end):
        parts.append(_trim(src, pos, m.end()))
        pos = m.end()
    parts.append(_trim(src, pos, end))
    return [(s, e) for s, e in parts if e > s]


def _char_spans(
    src: str, start: int, end: int, limit: int, count: Counter, tokens: int
) -> list[Span]:
    """Last resort for a 'word' bigger than a chunk (a URL, base64, minified
    code): pieces sized from its characters per token, each counted once."""
    per_token = (end - start) / max(tokens, 1)
    out: list[Span] = []
    pos = start
    while pos < end:
        size = min(end - pos, max(1, int(limit * per_token * 0.9)))
        n = count(src[pos : pos + size])
        while n > limit and size > 1:
            size = max(1, min(size - 1, int(size * limit / n * 0.9)))
            n = count(src[pos : pos + size])
        out.append((pos, pos + size, n))
        pos += size
    return out


def _fit_end(
    src: str,
    words: list[tuple[int, int]],
    ends: list[int],
    i: int,
    limit: int,
    count: Counter,
    per_token: float,
) -> tuple[int, int]:
    """The (about) largest j such that words[i:j] fit in ``limit`` tokens, and
    their count: a few proportional guesses, each counting one window, instead
    of counting every word."""
    s = words[i][0]
    lo, lo_n, hi = i, 0, len(words) + 1
    guess = min(max(bisect.bisect_right(ends, s + limit * per_token, i + 1), i + 1), len(words))
    for _ in range(8):
        n = count(src[s : words[guess - 1][1]])
        if n <= limit:
            lo, lo_n = guess, n
            if guess == len(words) or n >= limit * 0.95:
                break
        else:
            hi = guess
        if hi - lo <= 1:
            break
        guess = i + max(1, int((guess - i) * limit / max(n, 1)))
        guess = min(max(guess, lo + 1), hi - 1)
    if lo == i:
        return i + 1, count(src[s : words[i][1]])
    return lo, lo_n


def _repeat_from(
    src: str,
    words: list[tuple[int, int]],
    starts: list[int],
    i: int,
    j: int,
    overlap: int,
    count: Counter,
    per_token: float,
) -> int:
    """Where the next window starts so it repeats up to ``overlap`` tokens of
    words[i:j] (j when nothing fits); always after i, so windows advance."""
    end = words[j - 1][1]
    k = bisect.bisect_left(starts, end - overlap * per_token, i + 1, j)
    for _ in range(6):
        if k >= j:
            return j
        n = count(src[words[k][0] : end])
        if n <= overlap:
            return k
        k += max(1, int((j - k) * (1 - overlap / n)))
    return j


def _word_windows(
    src: str,
    start: int,
    end: int,
    limit: int,
    count: Counter,
    overlap: int = 0,
    tokens: int | None = None,
) -> list[Span]:
    """Windows of whole words within ``limit`` tokens, consecutive ones sharing
    up to ``overlap`` tokens; a word bigger than a window is cut by characters."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(src, start, end)]
    if not words:
        return []
    total = count(src[words[0][0] : words[-1][1]]) if tokens is None else tokens
    per_token = (words[-1][1] - words[0][0]) / max(total, 1)
    ends = [w[1] for w in words]
    starts = [w[0] for w in words]
    out: list[Span] = []
    i = 0
    while i < len(words):
        j, n = _fit_end(src, words, ends, i, limit, count, per_token)
        if n > limit:  # one word bigger than a window
            out.extend(_char_spans(src, words[i][0], words[i][1], limit, count, n))
            i += 1
            continue
        out.append((words[i][0], words[j - 1][1], n))
        if j >= len(words):
            break
        i = _repeat_from(src, words, starts, i, j, overlap, count, per_token) if overlap else j
    return out


_LEVELS: dict[str, re.Pattern[str]] = {
    "paragraphs": _PARAGRAPH_BREAK,
    "sentences": _SENTENCE_END,
    "lines": _LINE_BREAK,
    "items": _LIST_ITEM,
}


def _split(
    src: str,
    start: int,
    end: int,
    levels: tuple[str, ...],
    limit: int,
    count: Counter,
    tokens: int | None = None,
) -> list[Span]:
    """Spans of src[start:end], each within ``limit`` tokens, cut at the
    coarsest level that works (then words, then characters)."""
    n = count(src[start:end]) if tokens is None else tokens
    if n <= limit:
        return [(start, end, n)]
    for i, level in enumerate(levels):
        parts = _cut(src, start, end, _LEVELS[level])
        if len(parts) > 1:
            out: list[Span] = []
            for s, e in parts:
                out.extend(_split(src, s, e, levels[i + 1 :], limit, count))
            return out
    return _word_windows(src, start, end, limit, count, tokens=n)


_BLOCK_LEVELS: dict[str, tuple[str, ...]] = {
    "code": ("lines",),
    "list": ("items", "lines", "sentences"),
    "table": ("lines",),
}
_PROSE_LEVELS = ("paragraphs", "sentences")


# ------------------------------------------------------------------ packing


@dataclass(slots=True)
class _Unit:
    """An indivisible piece: a whole block or a cut of one."""

    start: int
    end: int
    tokens: int
    page: int | None
    prefix: str = ""  # a repeated table header, shown before the span
    own: str | None = None  # text of a block whose text is not a span of doc.text

    def text(self, src: str) -> str:
        return self.own if self.own is not None else self.prefix + src[self.start : self.end]


def _table_units(src: str, block: Block, limit: int, count: Counter) -> list[_Unit]:
    """Rows packed into pieces within budget, each repeating the header."""
    lines = _cut(src, block.start, block.end, _LINE_BREAK)
    head = 2 if len(lines) > 2 and _TABLE_RULE.match(src[lines[1][0] : lines[1][1]]) else 0
    header = src[lines[0][0] : lines[head - 1][1]] + "\n" if head else ""
    header_tokens = count(header) if head else 0
    if not head or header_tokens > limit // 2:
        spans = _split(src, block.start, block.end, ("lines",), limit, count)
        return [_Unit(s, e, n, block.page) for s, e, n in spans]
    budget = limit - header_tokens
    units: list[_Unit] = []
    group: list[Span] = []

    def close(final: bool) -> None:
        """Emit the rows gathered so far as a piece; rows that the real count
        finds over budget go back to the group (all of it emitted if final)."""
        carry: list[Span] = []
        while group:
            first = not units
            unit = _Unit(block.start if first else group[0][0], group[-1][1], 0, block.page)
            unit.prefix = "" if first else header
            unit.tokens = count(unit.text(src))  # once per piece: row sums are estimates
            if unit.tokens <= limit or len(group) == 1:
                units.append(unit)
                group[:] = carry[::-1]
                carry = []
                if not final:
                    return
            else:
                carry.append(group.pop())

    for s, e in lines[head:]:
        n = count(src[s:e])
        if n > budget:  # a single row bigger than a chunk: cut it, no header
            close(final=True)
            units.extend(
                _Unit(a, b, k, block.page) for a, b, k in _split(src, s, e, (), limit, count, n)
            )
            continue
        if group and sum(g[2] + 1 for g in group) + n + 1 > budget:
            close(final=False)
        group.append((s, e, n))
    close(final=True)
    return units


def _block_units(doc: LoadedDocument, block: Block, limit: int, count: Counter) -> list[_Unit]:
    src = doc.text
    spanned = src[block.start : block.end] == block.text
    n = count(block.text)
    if n <= limit:
        own = None if spanned else block.text
        return [_Unit(block.start, block.end, n, block.page, own=own)]
    if spanned and block.kind == "table":
        return _table_units(src, block, limit, count)
    levels = _BLOCK_LEVELS.get(block.kind, _PROSE_LEVELS)
    if spanned:
        spans = _split(src, block.start, block.end, levels, limit, count, n)
        return [_Unit(s, e, k, block.page) for s, e, k in spans]
    spans = _split(block.text, 0, len(block.text), levels, limit, count, n)
    return [_Unit(block.start, block.end, k, block.page, own=block.text[s:e]) for s, e, k in spans]


@dataclass(slots=True)
class _Draft:
    units: list[_Unit]
    overlap: int | None = None  # start offset of text repeated from the previous chunk
    tokens: int = 0
    text: str = ""


def _join(src: str, units: list[_Unit], overlap: int | None) -> str:
    """Chunk text: the document's own text between span pieces (so the text is
    the exact source span), a blank line around pieces that are not spans."""
    parts = [src[overlap : units[0].start]] if overlap is not None else []
    prev: _Unit | None = None
    for u in units:
        if prev is not None:
            spans = prev.own is None and u.own is None and prev.end <= u.start
            parts.append(src[prev.end : u.start] if spans else "\n\n")
        parts.append(u.text(src))
        prev = u
    return "".join(parts)


def _gap_cost(src: str, a: _Unit, b: _Unit) -> int:
    return 0 if a.own is None and b.own is None and src[a.end : b.start].strip(" ") == "" else 1


def _overlap(src: str, draft: _Draft, room: int, count: Counter) -> tuple[int | None, int]:
    """Where the trailing sentences (or lines) of a chunk that fit in ``room``
    tokens start, and their tokens; None when even the last one is too long."""
    if room <= 0 or any(u.own is not None for u in draft.units):
        return None, 0
    first, end = draft.units[0].start, draft.units[-1].end
    cuts = [m.end() for m in _SENTENCE_END.finditer(src, first, end)]
    cuts += [m.end() for m in _LINE_BREAK.finditer(src, first, end)]
    best: tuple[int | None, int] = (None, 0)
    for cut in sorted(set(cuts), reverse=True):
        s, e = _trim(src, cut, end)
        if e <= s:
            continue
        n = count(src[s:e])
        if n > room:
            break
        best = (s, n)
    return best


def _finish(src: str, draft: _Draft, count: Counter) -> None:
    draft.text = _join(src, draft.units, draft.overlap)
    draft.tokens = count(draft.text)


def _pack(units: list[_Unit], src: str, options: ChunkOptions, count: Counter) -> list[_Draft]:
    """Greedy packing of one section's units into drafts within budget."""
    limit = options.max_tokens
    drafts: list[_Draft] = []
    i = 0
    while i < len(units):
        overlap = None
        overlap_tokens = 0
        if drafts and options.overlap_tokens and not units[i].prefix:  # a header is context
            room = min(options.overlap_tokens, limit - units[i].tokens - 1)
            overlap, overlap_tokens = _overlap(src, drafts[-1], room, count)
        total = units[i].tokens + overlap_tokens
        j = i + 1
        while j < len(units):
            extra = units[j].tokens + _gap_cost(src, units[j - 1], units[j])
            if total + extra > limit:
                break
            total += extra
            j += 1
        draft = _Draft(units[i:j], overlap)
        _finish(src, draft, count)
        while draft.tokens > limit and (len(draft.units) > 1 or draft.overlap is not None):
            if draft.overlap is not None:
                draft.overlap = None  # the estimate was off: drop the repeat first
            else:
                draft.units.pop()
            _finish(src, draft, count)
        drafts.append(draft)
        i += len(draft.units)
    _merge_small_tail(drafts, src, options, count)
    return drafts


def _merge_small_tail(
    drafts: list[_Draft], src: str, options: ChunkOptions, count: Counter
) -> None:
    """Fold a last chunk whose own text (overlap aside) is under min_tokens into
    the one before it, giving up that one's overlap if that is what makes it fit:
    a tiny chunk, mostly repeated text, retrieves badly."""
    if len(drafts) < 2 or sum(u.tokens for u in drafts[-1].units) >= options.min_tokens:
        return
    units = drafts[-2].units + drafts[-1].units
    for overlap in dict.fromkeys((drafts[-2].overlap, None)):
        merged = _Draft(units, overlap)
        _finish(src, merged, count)
        if merged.tokens <= options.max_tokens:
            drafts[-2:] = [merged]
            return


def _sections(doc: LoadedDocument) -> Iterator[tuple[list[str], list[Block]]]:
    """Runs of non-heading blocks with the heading path above them."""
    stack: list[tuple[int, str]] = []
    run: list[Block] = []
    for block in doc.blocks:
        if block.kind == "heading":
            if run:
                yield [t for _, t in stack], run
                run = []
            level = max(block.level, 1)
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, block.text))
        else:
            run.append(block)
    if run:
        yield [t for _, t in stack], run


def _structure(doc: LoadedDocument, options: ChunkOptions, count: Counter) -> list[Chunk]:
    if not doc.blocks and doc.text.strip():
        s, e = _trim(doc.text, 0, len(doc.text))
        doc = LoadedDocument(
            doc.source, doc.format, doc.title, doc.text, [Block("paragraph", doc.text[s:e], s, e)]
        )
    chunks: list[Chunk] = []
    for path, blocks in _sections(doc):
        units = [u for b in blocks for u in _block_units(doc, b, options.max_tokens, count)]
        for d in _pack(units, doc.text, options, count):
            start = d.overlap if d.overlap is not None else d.units[0].start
            chunks.append(
                Chunk(d.text, start, d.units[-1].end, list(path), d.tokens, page=d.units[0].page)
            )
    return chunks


# -------------------------------------------------------------------- fixed


def _fixed(doc: LoadedDocument, options: ChunkOptions, count: Counter) -> list[Chunk]:
    """A sliding window of words: max_tokens wide, overlap_tokens repeated."""
    src = doc.text
    spans = _word_windows(src, 0, len(src), options.max_tokens, count, options.overlap_tokens)
    pages = [(b.start, b.page) for b in doc.blocks if b.page is not None]
    starts = [p[0] for p in pages]
    chunks = []
    for s, e, n in spans:
        page = pages[max(bisect.bisect_right(starts, s) - 1, 0)][1] if pages else None
        chunks.append(Chunk(src[s:e], s, e, [], n, page=page))
    return chunks
