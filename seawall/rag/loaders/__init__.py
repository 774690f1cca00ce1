"""Turn files and bytes into :class:`LoadedDocument`s made of structural blocks.

Every block's ``start``/``end`` index into ``LoadedDocument.text`` so a chunk
can cite the exact span it came from. For Markdown, plain text and JSONL the
text is the source itself; for HTML and PDF it is the extracted plain text,
blocks separated by blank lines. For every block but a Markdown heading,
``block.text == doc.text[block.start:block.end]``.

One module per format, each with one load function (its module docstring says
more about the library and its rules); :mod:`.common` holds what they share.
Library choices (all small wheels with no further dependency trees):

* Markdown (:mod:`.markdown`): ``markdown-it-py`` - CommonMark-correct, and its
  block tokens' line ranges give exact offsets (a regex splitter gets fences in
  lists and tables wrong). Front matter: PyYAML, already a gateway dependency.
* HTML (:mod:`.html`): ``selectolax`` (Lexbor) - a fast, lenient HTML5 parser
  in one self-contained wheel; boilerplate is dropped by a small explicit rule
  set rather than a heavyweight extractor such as trafilatura.
* PDF (:mod:`.pdf`): ``pypdf`` - pure Python, no system libraries; its text
  visitor's font sizes, names and positions are enough to find headings, code
  and paragraph breaks.
* JSONL (:mod:`.jsonl`): one document per line, parsed with ``orjson``. Plain
  text needs no parser (paragraph and list blocks, in :mod:`.common`).

The parsers are imported lazily, inside functions, so importing this package
stays cheap.
"""

from __future__ import annotations

import codecs
from pathlib import Path, PurePosixPath
from typing import Any

from seawall.rag.documents import LoadedDocument
from seawall.rag.loaders.common import (
    UnsupportedFormat,
    decode_html,
    decode_text,
    looks_like_text,
    path_part,
    plain_blocks,
    stem,
)
from seawall.rag.loaders.html import load_html
from seawall.rag.loaders.jsonl import JsonlError, load_jsonl
from seawall.rag.loaders.markdown import load_markdown
from seawall.rag.loaders.pdf import load_pdf

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


def detect_format(filename: str, content_type: str | None = None, data: bytes | None = None) -> str:
    """Return the loader format for a file name (the extension wins over the
    content type, which servers often get wrong). An unknown extension is
    "text" only if ``data`` (when given) decodes as UTF-8 without NUL bytes."""
    suffix = PurePosixPath(path_part(filename)).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if content_type:
        mime = content_type.split(";", 1)[0].strip().lower()
        if mime in _CONTENT_TYPES:
            return _CONTENT_TYPES[mime]
    if data is not None and not looks_like_text(data):
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
        return [load_pdf(data, source, metadata, title, modified)]
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"{source}: unknown format {fmt!r}; expected one of {FORMATS}")
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and b"\x00" in data[:65536]:
        raise UnsupportedFormat(f"{source}: binary content is not {fmt} (it has NUL bytes)")
    text = decode_html(data) if fmt == "html" else decode_text(data)
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
        return [load_markdown(text, source, meta, title, modified)]
    if format == "text":
        name = title or stem(source)
        return [LoadedDocument(source, "text", name, text, plain_blocks(text), meta, modified)]
    if format == "html":
        return [load_html(text, source, meta, title, modified)]
    if format == "jsonl":
        return load_jsonl(text, source, meta, title, modified, text_field)
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
