"""Splitting a streamed file into lines: pieces cut anywhere, long lines
dropped as they stream (never accumulated), the last line without a newline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from seawall.batches.service import split_lines


async def _split(data: bytes, size: int, limit: int) -> list[tuple[int, bytes | None]]:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i:i + size]
    return [x async for x in split_lines(pieces(), limit)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_lines_whatever_the_pieces(size: int) -> None:
    data = b'{"a":1}\n\n' + b"x" * 30 + b"\nlast"
    assert await _split(data, size, limit=10) == [
        (0, b'{"a":1}'), (1, b""), (2, None), (3, b"last")]


async def test_edges() -> None:
    assert await _split(b"", 4, 10) == []
    assert await _split(b"abc\n", 4, 10) == [(0, b"abc")]
    assert await _split(b"abcdefghijk", 4, 10) == [(0, None)]  # too long, no newline
    assert await _split(b"0123456789\n", 3, 10) == [(0, b"0123456789")]  # exactly the limit
