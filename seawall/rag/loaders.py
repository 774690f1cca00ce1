"""Turn files and bytes into :class:`LoadedDocument`s made of structural blocks.

Every block's ``start``/``end`` index into ``LoadedDocument.text`` so a chunk
can cite the exact span it came from. For Markdown, plain text and JSONL the
text is the source itself; for HTML and PDF it is the extracted plain text,
blocks separated by blank lines. For every block but a Markdown heading,
``block.text == doc.text[block.start:block.end]``.

Library choices (all small wheels with no further dependency trees):

* Markdown: ``markdown-it-py`` - a CommonMark-correct parser (fenced code, GFM
  tables, nested lists, lazy continuations) whose block tokens carry ``.map``
  line ranges, which turn into exact character offsets in the source. A
  regex-based splitter gets fences inside lists and tables wrong.
* HTML: ``selectolax`` (Lexbor engine) - a fast, lenient HTML5 parser in one
  self-contained wheel (C, no libxml2), with the plain node walking we need;
  boilerplate (script/style/nav/header/footer/aside/form, navigation roles,
  hidden nodes, cookie/share/sidebar classes) is dropped by a small explicit
  rule set instead of a heavyweight extractor such as trafilatura, and
  ``main``/``article`` is read in preference to the whole body.
* PDF: ``pypdf`` - pure Python, no system libraries. Its text visitor gives
  each run's font size, font name and position, which is enough to find
  headings (larger than body text), code (monospace) and paragraph breaks
  (vertical gaps). Only the text layer is read: scanned pages yield nothing.
* Front matter: PyYAML, already a dependency of the gateway. Its ``title``
  names the document; its other keys join the metadata (caller's keys win).
"""

from __future__ import annotations

import codecs
import datetime as _dt
import functools
import io
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml

from seawall.rag.documents import Block, BlockKind, LoadedDocument

__all__ = [
    "FORMATS",
    "JsonlError",
    "UnsupportedFormat",
    "detect_format",
    "load_bytes",
    "load_path",
    "load_text",
]

FORMATS = ("markdown", "text", "html", "pdf", "jsonl")

_EXTENSIONS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_CONTENT_TYPES = {
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/x-jsonlines": "jsonl",
}


class UnsupportedFormat(ValueError):
    """The input is not one of the formats the loaders read (or is binary)."""


class JsonlError(ValueError):
    """A JSONL line that is not a JSON object with a string text field."""


# ---------------------------------------------------------------- public API


def detect_format(filename: str, content_type: str | None = None, data: bytes | None = None) -> str:
    """Return the loader format for a file name (the extension wins over the
    content type, which servers often get wrong). An unknown extension is
    "text" only if ``data`` (when given) decodes as UTF-8 without NUL bytes."""
    suffix = PurePosixPath(_path_part(filename)).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if content_type:
        mime = content_type.split(";", 1)[0].strip().lower()
        if mime in _CONTENT_TYPES:
            return _CONTENT_TYPES[mime]
    if data is not None and not _looks_like_text(data):
        raise UnsupportedFormat(
            f"{filename}: unsupported format (extension {suffix or 'none'!r} is not one of "
            f"{', '.join(sorted(_EXTENSIONS))} and the content is not UTF-8 text)"
        )
    return "text"


def load_bytes(
    data: bytes,
    source: str,
    format: str | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    title: str | None = None,
    modified: float | None = None,
    text_field: str = "text",
) -> list[LoadedDocument]:
    """Load raw bytes; ``format`` None means detect it from ``source``'s name."""
    fmt = format or detect_format(source, data=data)
    if fmt == "pdf":
        return [_load_pdf(data, source, metadata, title, modified)]
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"{source}: unknown format {fmt!r}; expected one of {FORMATS}")
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and b"\x00" in data[:65536]:
        raise UnsupportedFormat(f"{source}: binary content is not {fmt} (it has NUL bytes)")
    text = _decode_html(data) if fmt == "html" else _decode_text(data)
    return load_text(
        text, source, fmt, metadata=metadata, title=title, modified=modified, text_field=text_field
    )


def load_text(
    text: str,
    source: str,
    format: str = "text",
    *,
    metadata: dict[str, Any] | None = None,
    title: str | None = None,
    modified: float | None = None,
    text_field: str = "text",
) -> list[LoadedDocument]:
    """Load already-decoded text (PDF needs bytes: use :func:`load_bytes`)."""
    meta = dict(metadata or {})
    if format == "markdown":
        return [_load_markdown(text, source, meta, title, modified)]
    if format == "text":
        name = title or _stem(source)
        return [LoadedDocument(source, "text", name, text, _plain_blocks(text), meta, modified)]
    if format == "html":
        return [_load_html(text, source, meta, title, modified)]
    if format == "jsonl":
        return _load_jsonl(text, source, meta, title, modified, text_field)
    if format == "pdf":
        raise UnsupportedFormat(f"{source}: PDF must be loaded from bytes (load_bytes/load_path)")
    raise UnsupportedFormat(f"{source}: unknown format {format!r}; expected one of {FORMATS}")


def load_path(
    path: Path,
    format: str | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    title: str | None = None,
    modified: float | None = None,
    text_field: str = "text",
) -> list[LoadedDocument]:
    """Load a file; ``modified`` defaults to its mtime and metadata gets its path."""
    path = Path(path)
    data = path.read_bytes()
    meta = {"path": str(path), **(metadata or {})}
    when = modified if modified is not None else path.stat().st_mtime
    return load_bytes(
        data, str(path), format, metadata=meta, title=title, modified=when, text_field=text_field
    )


# ------------------------------------------------------------------ helpers


def _path_part(source: str) -> str:
    return urlsplit(source).path if "://" in source else source


def _stem(source: str) -> str:
    name = PurePosixPath(_path_part(source).replace("\\", "/").rstrip("/")).stem
    return name or source


def _looks_like_text(data: bytes) -> bool:
    if b"\x00" in data[:65536]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_text(data: bytes) -> str:
    """UTF-8 (BOM dropped); a file named as text but in a legacy encoding still loads."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


_META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_.:-]+)""", re.I)


def _decode_html(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    found = _META_CHARSET.search(data[:4096])
    if found:
        try:
            return data.decode(found.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return data.decode("cp1252", errors="replace")


def _jsonable(value: Any) -> Any:
    """Front-matter values as JSON-safe types, so metadata can be stored and filtered."""
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@dataclass(slots=True)
class _Piece:
    kind: BlockKind
    text: str
    level: int = 0
    page: int | None = None


def _assemble(pieces: Iterable[_Piece]) -> tuple[str, list[Block]]:
    """Join extracted blocks with blank lines and record each one's offsets."""
    parts: list[str] = []
    blocks: list[Block] = []
    pos = 0
    for piece in pieces:
        text = piece.text.strip("\n")
        if not text.strip():
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        parts.append(text)
        blocks.append(Block(piece.kind, text, pos, pos + len(text), piece.level, piece.page))
        pos += len(text)
    return "".join(parts), blocks


# ---------------------------------------------------------------- plain text

_RUN_OF_LINES = re.compile(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*")
_LIST_LINE = re.compile(r"\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+\S")


def _plain_blocks(text: str, base: int = 0) -> list[Block]:
    """Paragraphs are runs of non-blank lines; a run whose lines all look like
    list items is a list."""
    blocks = []
    for m in _RUN_OF_LINES.finditer(text):
        raw = m.group()
        lead = len(raw) - len(raw.lstrip())
        body = raw.strip()
        start = base + m.start() + lead
        lines = body.splitlines()
        kind: BlockKind = "list" if all(_LIST_LINE.match(x) for x in lines) else "paragraph"
        blocks.append(Block(kind, body, start, start + len(body)))
    return blocks


# ------------------------------------------------------------------ markdown

_FRONT_MATTER = re.compile(
    r"\A---[ \t]*\r?\n(.*?)(?:\r?\n)?^(?:---|\.\.\.)[ \t]*$\r?\n?", re.S | re.M
)
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what markdown-it counts as a line break
_MD_KINDS: dict[str, BlockKind] = {
    "paragraph_open": "paragraph",
    "fence": "code",
    "code_block": "code",
    "table_open": "table",
    "bullet_list_open": "list",
    "ordered_list_open": "list",
    "blockquote_open": "quote",
    "html_block": "paragraph",
}


@functools.cache
def _markdown() -> tuple[Any, Any]:
    """A block-only parser (inline rules off: a third faster, and only headings
    need inline parsing) and a full one for heading text."""
    from markdown_it import MarkdownIt

    full = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    blocks = MarkdownIt("commonmark").enable(["table", "strikethrough"]).disable("inline")
    return blocks, full


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _front_matter(text: str) -> tuple[dict[str, Any], int]:
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, 0
    try:
        data = yaml.load(m.group(1), Loader=_YAML_LOADER)  # a safe loader (C if built)
    except yaml.YAMLError:
        return {}, 0
    if not isinstance(data, dict):
        return {}, 0
    return {str(k): _jsonable(v) for k, v in data.items()}, m.end()


def _heading_text(content: str) -> str:
    """A heading's text without Markdown markup (for heading paths)."""
    parts = []
    for token in _markdown()[1].parseInline(content):
        for child in token.children or []:
            if child.type in ("text", "code_inline"):
                parts.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                parts.append(" ")
    return " ".join("".join(parts).split()) or content.strip()


def _markdown_blocks(body: str, base: int) -> list[Block]:
    starts = [0] + [m.end() for m in _NEWLINE.finditer(body)]
    ends = [m.start() for m in _NEWLINE.finditer(body)] + [len(body)]
    tokens = _markdown()[0].parse(body)
    blocks: list[Block] = []
    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.map is None or tok.nesting < 0:
            continue
        first, last = tok.map[0], tok.map[1] - 1
        start, end = starts[first], ends[max(first, last)]
        span = body[start:end]
        if tok.type != "code_block":
            start += len(span) - len(span.lstrip())
        end = start + len(body[start:end].rstrip())
        if end <= start:
            continue
        if tok.type == "heading_open":
            title = _heading_text(tokens[i + 1].content)
            blocks.append(Block("heading", title, base + start, base + end, int(tok.tag[1:])))
            continue
        kind = _MD_KINDS.get(tok.type)
        if kind is None or (tok.type == "html_block" and tok.content.lstrip().startswith("<!--")):
            continue  # thematic breaks, comments
        blocks.append(Block(kind, body[start:end], base + start, base + end))
    return blocks


def _load_markdown(
    text: str, source: str, meta: dict[str, Any], title: str | None, modified: float | None
) -> LoadedDocument:
    front, offset = _front_matter(text)
    blocks = _markdown_blocks(text[offset:], offset)
    front_title = front.pop("title", None)
    h1 = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    name = title or (str(front_title) if front_title else None) or h1 or _stem(source)
    return LoadedDocument(source, "markdown", name, text, blocks, {**front, **meta}, modified)


# ---------------------------------------------------------------------- html

_SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "nav", "aside", "form", "iframe", "svg",
     "canvas", "button", "select", "input", "textarea", "dialog", "footer", "object",
     "embed", "map", "audio", "video", "head", "meta", "link"}
)  # fmt: skip
_SKIP_ROLES = frozenset(
    {"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar",
     "dialog"}
)  # fmt: skip
_BOILERPLATE_CLASS = re.compile(
    r"(?:^|[-_])(?:nav|navbar|menu|breadcrumbs?|sidebar|cookies?|consent|share|sharing|social"
    r"|advert|advertisement|ads|newsletter|skip-link|popup|modal)(?:$|[-_])"
)
_INLINE_TAGS = frozenset(
    {"a", "abbr", "b", "bdi", "bdo", "br", "cite", "code", "data", "del", "dfn", "em", "font",
     "i", "img", "ins", "kbd", "label", "mark", "q", "s", "samp", "small", "span", "strike",
     "strong", "sub", "sup", "time", "tt", "u", "var", "wbr", "-text"}
)  # fmt: skip
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


def _is_boilerplate(node: Any, in_article: bool) -> bool:
    tag = node.tag
    if tag in _SKIP_TAGS or (tag == "header" and not in_article):
        return True
    attrs = node.attributes
    if "hidden" in attrs or attrs.get("aria-hidden") == "true":
        return True
    if (attrs.get("role") or "") in _SKIP_ROLES:
        return True
    if tag in _INLINE_TAGS:
        return False
    names = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".lower().split()
    return any(_BOILERPLATE_CLASS.search(n) for n in names)


def _collapse(text: str) -> str:
    """Collapse HTML whitespace; U+2028 marks a <br> and survives as a newline."""
    lines = (" ".join(x.split()) for x in text.split("\u2028"))
    return "\n".join(x for x in lines if x)


class _HtmlWalker:
    """Walk the content root in reading order, emitting blocks."""

    def __init__(self) -> None:
        self.pieces: list[_Piece] = []
        self._inline: list[str] = []

    def _flush(self) -> None:
        text = _collapse("".join(self._inline))
        self._inline.clear()
        if text:
            self.pieces.append(_Piece("paragraph", text))

    def inline_text(self, node: Any, in_article: bool, skip: frozenset[str] = frozenset()) -> str:
        out: list[str] = []
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                out.append(child.text_content or "")
            elif tag == "br":
                out.append("\u2028")
            elif tag in skip or tag.startswith(("_", "!")) or _is_boilerplate(child, in_article):
                continue
            else:
                sep = "" if tag in _INLINE_TAGS else " "
                out.append(sep + self.inline_text(child, in_article, skip) + sep)
        return "".join(out)

    def walk(self, node: Any, in_article: bool) -> None:
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                self._inline.append(child.text_content or "")
                continue
            if tag.startswith(("_", "!")) or _is_boilerplate(child, in_article):
                continue
            if tag in _INLINE_TAGS:
                text = "\u2028" if tag == "br" else self.inline_text(child, in_article)
                self._inline.append(text)
                continue
            self._flush()
            self.block(child, tag, in_article)
        self._flush()

    def block(self, node: Any, tag: str, in_article: bool) -> None:
        if tag in _HEADINGS:
            text = _collapse(self.inline_text(node, in_article)).replace("\n", " ")
            if text:
                self.pieces.append(_Piece("heading", text, _HEADINGS[tag]))
        elif tag == "p":
            self.pieces.append(_Piece("paragraph", _collapse(self.inline_text(node, in_article))))
        elif tag == "pre":
            lines = (node.text(deep=True) or "").expandtabs(4).splitlines()
            self.pieces.append(_Piece("code", "\n".join(x.rstrip() for x in lines).strip("\n")))
        elif tag == "table":
            self.table(node, in_article)
        elif tag in ("ul", "ol", "dl"):
            lines = self.list_lines(node, in_article, 0)
            self.pieces.append(_Piece("list", "\n".join(lines)))
        elif tag == "blockquote":
            inner = _HtmlWalker()
            inner.walk(node, in_article)
            self.pieces.append(_Piece("quote", "\n\n".join(p.text for p in inner.pieces)))
        elif tag != "hr":
            self.walk(node, in_article or tag == "article")

    def list_lines(self, node: Any, in_article: bool, depth: int) -> list[str]:
        lines: list[str] = []
        number = int(node.attributes.get("start") or 1) if node.tag == "ol" else 0
        pad = "  " * depth
        for item in node.iter():
            if _is_boilerplate(item, in_article):
                continue
            text = _collapse(self.inline_text(item, in_article, frozenset({"ul", "ol", "dl"})))
            text = text.replace("\n", " ")
            if item.tag == "dd":
                marker = "  "
            elif node.tag == "ol":
                marker, number = f"{number}. ", number + 1
            else:
                marker = "- "
            if text:
                lines.append(pad + marker + text)
            for sub in _nested_lists(item):
                lines.extend(self.list_lines(sub, in_article, depth + 1))
        return lines

    def table(self, node: Any, in_article: bool) -> None:
        """Rows become GFM table lines; a header row gets a separator so the
        chunker can repeat it when it splits the table."""
        caption = node.css_first("caption")
        if caption is not None:
            text = _collapse(self.inline_text(caption, in_article))
            self.pieces.append(_Piece("paragraph", text))
        rows: list[str] = []
        for i, tr in enumerate(r for r in node.css("tr") if _owning_table(r) == node.mem_id):
            cells = [c for c in tr.iter() if c.tag in ("td", "th")]
            texts = [
                _collapse(self.inline_text(c, in_article)).replace("\n", " ").replace("|", "\\|")
                for c in cells
            ]
            if not any(texts):
                continue
            rows.append("| " + " | ".join(texts) + " |")
            if i == 0 and cells and all(c.tag == "th" for c in cells):
                rows.append("| " + " | ".join("---" for _ in cells) + " |")
        if rows:
            self.pieces.append(_Piece("table", "\n".join(rows)))


def _nested_lists(node: Any) -> Iterator[Any]:
    """The outermost lists inside a list item (however deeply wrapped)."""
    for child in node.iter():
        if child.tag in ("ul", "ol", "dl"):
            yield child
        else:
            yield from _nested_lists(child)


def _owning_table(node: Any) -> int | None:
    """The mem_id of a row's table (wrappers are not identical objects)."""
    parent = node.parent
    while parent is not None and parent.tag != "table":
        parent = parent.parent
    return parent.mem_id if parent is not None else None


def _load_html(
    text: str, source: str, meta: dict[str, Any], title: str | None, modified: float | None
) -> LoadedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    articles = tree.css("article")
    root = tree.css_first("main") or (articles[0] if len(articles) == 1 else None)
    root = root or tree.body or tree.root
    walker = _HtmlWalker()
    if root is not None:
        walker.walk(root, root.tag in ("article", "main"))
    body, blocks = _assemble(walker.pieces)
    if not title:
        tag = tree.css_first("title")
        title = " ".join((tag.text() if tag is not None else "").split())
    if not title:
        title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), "")
    if not title:
        h1 = tree.css_first("h1")
        title = " ".join((h1.text() if h1 is not None else "").split())
    return LoadedDocument(source, "html", title or _stem(source), body, blocks, meta, modified)


# ----------------------------------------------------------------------- pdf

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


def _group_pdf_lines(lines: list[_Line]) -> Iterator[_Piece]:
    """Headings are lines clearly larger than the body size (levels by size),
    runs of monospace lines are code, and a vertical gap, indent change or
    size change starts a new paragraph."""
    sized = [ln for ln in lines if ln.size > 0]
    if not sized:
        for page in sorted({ln.page for ln in lines}):
            text = "\n".join(ln.text for ln in lines if ln.page == page)
            for b in _plain_blocks(text):
                yield _Piece(b.kind, b.text, page=page)
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

    def emit() -> _Piece | None:
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
        return _Piece(kind, text, level, current[0].page)

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


def _load_pdf(
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
    text, blocks = _assemble(_group_pdf_lines(lines))
    first = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    name = title or pdf_title or first or _stem(source)
    meta = {"pages": len(reader.pages), **(metadata or {})}
    return LoadedDocument(source, "pdf", name, text, blocks, meta, modified)


# --------------------------------------------------------------------- jsonl


def _load_jsonl(
    text: str,
    source: str,
    meta: dict[str, Any],
    title: str | None,
    modified: float | None,
    text_field: str,
) -> list[LoadedDocument]:
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise JsonlError(f"{source} line {number}: invalid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise JsonlError(f"{source} line {number}: expected a JSON object")
        body = record.pop(text_field, None)
        if not isinstance(body, str):
            raise JsonlError(f"{source} line {number}: missing string field {text_field!r}")
        rid = record.pop("id", None)
        name = record.pop("title", None)
        key = str(rid) if rid is not None else str(number)
        docs.append(
            LoadedDocument(
                f"{source}#{key}",
                "jsonl",
                str(name) if name else (title or f"{_stem(source)}#{key}"),
                body,
                _plain_blocks(body),
                {**meta, **record},
                modified,
            )
        )
    return docs
