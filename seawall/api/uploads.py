"""Uploads read under a size cap while they arrive, chunked bodies included.

A declared ``Content-Length`` over the cap is refused before reading; any
body is counted as it streams in and refused (413) the moment it passes the
cap, so a chunked upload never costs more than the cap. Multipart forms are
parsed as they stream by Starlette's parser (python-multipart), with file and
field counts capped; what this module adds is the total size cap Starlette
does not have.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from seawall.errors import BodyTooLarge, InvalidRequest

__all__ = ["Form", "read_form", "read_upload"]

SETTING = "rag.max_upload_bytes"


def _too_large(limit: int, declared: str | None = None) -> BodyTooLarge:
    size = f"is {declared} bytes" if declared is not None else f"exceeds {limit} bytes"
    return BodyTooLarge(f"The upload {size}; at most {limit} bytes are accepted ({SETTING}). "
                        "Split it into several requests, or use `seawall ingest` on the server.")


def check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise InvalidRequest("Invalid Content-Length header.")
    if int(declared) > limit:
        raise _too_large(limit, declared)


async def bounded_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's pieces as they arrive; 413 once more than ``limit`` came."""
    check_declared(request, limit)
    size = 0
    try:
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise _too_large(limit)
            yield piece
    except ClientDisconnect:
        raise InvalidRequest("The client disconnected while sending the body.",
                             code="client_closed_request") from None


async def read_upload(request: Request, limit: int) -> bytes:
    """A whole (non-multipart) body of at most ``limit`` bytes."""
    return b"".join([piece async for piece in bounded_stream(request, limit)])


@dataclass(slots=True)
class File:
    name: str
    data: bytes


@dataclass(slots=True)
class Form:
    files: list[File]
    fields: dict[str, str]


async def read_form(request: Request, limit: int, max_files: int,
                    max_fields: int = 100, max_field_bytes: int = 1 << 20) -> Form:
    """A multipart form of at most ``limit`` bytes in all, ``max_files``
    files and ``max_fields`` text fields of ``max_field_bytes`` each.

    Starlette spools each file past 1 MB to a temporary file as it arrives;
    the files are read back (on a worker thread) and closed here."""
    parser = MultiPartParser(request.headers, bounded_stream(request, limit),
                             max_files=max_files, max_fields=max_fields,
                             max_part_size=max_field_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidRequest(f"Invalid multipart form: {e.message}", code="invalid_form") from None
    files: list[File] = []
    fields: dict[str, str] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append(File(value.filename or "upload", await value.read()))
            else:
                fields.setdefault(key, value)
    finally:
        await form.close()
    return Form(files, fields)
