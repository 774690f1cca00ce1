"""The shapes that flow through ingestion: a loaded document made of
structural blocks, and the chunks cut from it.

Offsets always index into :attr:`LoadedDocument.text`, so a citation can point
at the exact span of the document a chunk came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Block", "BlockKind", "Chunk", "LoadedDocument"]

BlockKind = Literal["heading", "paragraph", "code", "table", "list", "quote"]


@dataclass(slots=True)
class Block:
    """One structural unit of a document, in reading order."""

    kind: BlockKind
    text: str  # the block's text as it should be embedded and shown
    start: int  # character offsets into LoadedDocument.text
    end: int
    level: int = 0  # heading level (1 = top); 0 for other kinds
    page: int | None = None  # 1-based page, for PDFs


@dataclass(slots=True)
class LoadedDocument:
    """What a loader returns: the text, its structure and its metadata."""

    source: str  # a path, a URL or a caller-given id: unique within a collection
    format: str  # markdown | text | html | pdf | jsonl
    title: str
    text: str  # the document's full text; block and chunk offsets index into it
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)  # custom fields, for filters
    modified: float | None = None  # unix seconds, if known


@dataclass(slots=True)
class Chunk:
    """A retrievable piece of a document."""

    text: str
    start: int  # offsets into LoadedDocument.text
    end: int
    heading_path: list[str]  # the headings above the chunk, outermost first
    tokens: int  # by the token counter the chunker was given
    ordinal: int = 0  # position among the document's chunks
    page: int | None = None  # first page the chunk is on, for PDFs
