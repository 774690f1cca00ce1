"""Helpers every loader shares: decoding bytes, naming documents after their
source, plain-text paragraph blocks, and assembling extracted blocks into one
text with exact offsets."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from seawall.rag.documents import Block, BlockKind


class UnsupportedFormat(ValueError):
    """The input is not one of the formats the loaders read (or is binary)."""


# ------------------------------------------------------- names and decoding


def path_part(source: str) -> str:
    return urlsplit(source).path if "://" in source else source


def stem(source: str) -> str:
    name = PurePosixPath(path_part(source).replace("\\", "/").rstrip("/")).stem
    return name or source


def looks_like_text(data: bytes) -> bool:
    if b"\x00" in data[:65536]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM dropped); a file named as text but in a legacy encoding still loads."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


_META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_.:-]+)""", re.I)


def decode_html(data: bytes) -> str:
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


# ------------------------------------------------------------------ blocks


@dataclass(slots=True)
class Piece:
    kind: BlockKind
    text: str
    level: int = 0
    page: int | None = None


def assemble(pieces: Iterable[Piece]) -> tuple[str, list[Block]]:
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


_RUN_OF_LINES = re.compile(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*")
_LIST_LINE = re.compile(r"\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+\S")


def plain_blocks(text: str, base: int = 0) -> list[Block]:
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
