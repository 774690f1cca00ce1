"""PDF loader.

``pypdf`` is pure Python, no system libraries. Its text visitor gives each
run's font size, font name and position, which is enough to find headings
(larger than body text), code (monospace) and paragraph breaks (vertical
gaps). Only the text layer is read: scanned pages yield nothing. The document
text is the extracted plain text, blocks separated by blank lines.
"""

from __future__ import annotations

import io
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from seawall.rag.documents import BlockKind, LoadedDocument
from seawall.rag.loaders.common import Piece, UnsupportedFormat, assemble, plain_blocks, stem

_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}
)
_MONO = re.compile(r"mono|courier|consol|code|menlo|inconsolata", re.I)


@dataclass(slots=True)
class _Line:
    text: str
    x: float | None
    y: float | None
    size: float
    mono: bool
    page: int


def _pdf_lines(page: Any, number: int) -> list[_Line]:
    """Lines of one page with the position, size and font of their first run.
    The visitor sees exactly the pieces pypdf's extract_text joins."""
    lines: list[_Line] = []
    runs: list[tuple[str, float, float, float, bool]] = []
    buf: list[str] = []

    def end_line() -> None:
        text = "".join(buf).translate(_LIGATURES).rstrip()
        if text.strip() and runs:
            x, y = runs[0][1], runs[0][2]
            size = max(r[3] for r in runs)
            lines.append(_Line(text, x, y, size, all(r[4] for r in runs), number))
        elif text.strip():
            lines.append(_Line(text, None, None, 0.0, False, number))
        buf.clear()
        runs.clear()

    def visit(text: str, cm: Any, tm: Any, font: Any, size: float) -> None:
        chunks = text.split("\n")
        for i, chunk in enumerate(chunks):
            if i:
                end_line()
            if not chunk:
                continue
            buf.append(chunk)
            if chunk.strip() and tm is not None and cm is not None:
                scale = math.sqrt(abs(tm[0] * tm[3] - tm[1] * tm[2]))
                scale *= math.sqrt(abs(cm[0] * cm[3] - cm[1] * cm[2]))
                x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
                y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
                name = str(font.get("/BaseFont", "")) if font else ""
                runs.append((chunk, x, y, float(size or 0) * scale, bool(_MONO.search(name))))

    page.extract_text(visitor_text=visit)
    end_line()
    return lines


def _group_pdf_lines(lines: list[_Line]) -> Iterator[Piece]:
    """Headings are lines clearly larger than the body size (levels by size),
    runs of monospace lines are code, and a vertical gap, indent change or
    size change starts a new paragraph."""
    sized = [ln for ln in lines if ln.size > 0]
    if not sized:
        for page in sorted({ln.page for ln in lines}):
            text = "\n".join(ln.text for ln in lines if ln.page == page)
            for b in plain_blocks(text):
                yield Piece(b.kind, b.text, page=page)
        return
    weights: Counter[float] = Counter()
    for ln in sized:
        weights[round(ln.size, 1)] += len(ln.text)
    body = weights.most_common(1)[0][0]
    heading_sizes = sorted(
        {round(ln.size, 1) for ln in sized if ln.size >= body * 1.15 and len(ln.text) < 200},
        reverse=True,
    )
    levels = {s: i + 1 for i, s in enumerate(heading_sizes[:6])}
    steps = [
        a.y - b.y
        for a, b in zip(sized, sized[1:], strict=False)
        if a.page == b.page
        and a.y is not None
        and b.y is not None
        and round(a.size, 1) == round(b.size, 1) == body
        and a.y != b.y
    ]
    step = statistics.median(abs(s) for s in steps) if steps else body * 1.2

    def kind_of(ln: _Line) -> tuple[BlockKind, int]:
        level = levels.get(round(ln.size, 1)) if len(ln.text) < 200 else None
        if level:
            return "heading", level
        return ("code", 0) if ln.mono else ("paragraph", 0)

    current: list[_Line] = []
    current_kind: tuple[BlockKind, int] = ("paragraph", 0)

    def emit() -> Piece | None:
        if not current:
            return None
        kind, level = current_kind
        if kind == "code":
            text = "\n".join(ln.text for ln in current)
        else:
            text = ""
            for ln in current:
                part = ln.text.strip()
                if text.endswith("-") and part[:1].islower():
                    text += part
                else:
                    text = f"{text} {part}" if text else part
        return Piece(kind, text, level, current[0].page)

    prev: _Line | None = None
    for ln in lines:
        kind = kind_of(ln) if ln.size > 0 else ("paragraph", 0)
        new = prev is None or kind != current_kind or ln.page != prev.page
        if not new and prev is not None and ln.y is not None and prev.y is not None:
            gap = abs(prev.y - ln.y)
            new = gap > step * 1.4 * max(1.0, ln.size / body)
            if kind[0] == "paragraph" and ln.x is not None and prev.x is not None:
                new = new or abs(ln.x - prev.x) > body * 0.8
        if new:
            piece = emit()
            if piece:
                yield piece
            current = []
            current_kind = kind
        current.append(ln)
        prev = ln
    piece = emit()
    if piece:
        yield piece


def load_pdf(
    data: bytes,
    source: str,
    metadata: dict[str, Any] | None,
    title: str | None,
    modified: float | None,
) -> LoadedDocument:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnsupportedFormat(f"{source}: the PDF is encrypted")
        lines = [ln for n, page in enumerate(reader.pages, 1) for ln in _pdf_lines(page, n)]
        info = reader.metadata
        pdf_title = str(info.title or "").strip() if info is not None else ""
    except UnsupportedFormat:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files; all mean "unreadable"
        raise UnsupportedFormat(f"{source}: not a readable PDF ({exc})") from exc
    text, blocks = assemble(_group_pdf_lines(lines))
    first = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    name = title or pdf_title or first or stem(source)
    meta = {"pages": len(reader.pages), **(metadata or {})}
    return LoadedDocument(source, "pdf", name, text, blocks, meta, modified)
