"""Markdown loader.

``markdown-it-py`` is a CommonMark-correct parser (fenced code, GFM tables,
nested lists, lazy continuations) whose block tokens carry ``.map`` line
ranges, which turn into exact character offsets in the source. A regex-based
splitter gets fences inside lists and tables wrong. The document text is the
source itself.

Front matter is read with PyYAML, already a dependency of the gateway. Its
``title`` names the document; its other keys join the metadata (caller's keys
win).
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from typing import Any

import yaml

from seawall.rag.documents import Block, BlockKind, LoadedDocument
from seawall.rag.loaders.common import stem

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


def load_markdown(
    text: str, source: str, meta: dict[str, Any], title: str | None, modified: float | None
) -> LoadedDocument:
    front, offset = _front_matter(text)
    blocks = _markdown_blocks(text[offset:], offset)
    front_title = front.pop("title", None)
    h1 = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    name = title or (str(front_title) if front_title else None) or h1 or stem(source)
    return LoadedDocument(source, "markdown", name, text, blocks, {**front, **meta}, modified)
