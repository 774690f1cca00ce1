"""JSONL loader: one document per line, its text in a string field (``text``
by default), ``id`` and ``title`` naming it and every other key joining its
metadata. The text is read as plain text (paragraph and list blocks)."""

from __future__ import annotations

from typing import Any

import orjson

from seawall.rag.documents import LoadedDocument
from seawall.rag.loaders.common import plain_blocks, stem


class JsonlError(ValueError):
    """A JSONL line that is not a JSON object with a string text field."""


def load_jsonl(
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
                str(name) if name else (title or f"{stem(source)}#{key}"),
                body,
                plain_blocks(body),
                {**meta, **record},
                modified,
            )
        )
    return docs
