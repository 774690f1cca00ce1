"""``seawall ingest --url``: send files to a running (or remote) gateway's
``POST /v1/collections/{name}/documents`` as multipart batches, so a laptop
can feed a shared server or several replicas without their store file.

A batch stays under the sizes given (keep them under the server's
``rag.max_upload_bytes`` and ``rag.max_files``); a 429 (the ingestion quota)
is waited out as its ``Retry-After`` says and retried; a file the server
refuses (400 naming it) is reported failed and the rest of its batch resent;
a 413 splits the batch. Errors that no retry can fix (401, a bad collection
name, the server gone) stop the run with the server's message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

MAX_RETRIES = 20  # 429/503 waits for one batch before it is reported failed
DEFAULT_WAIT_S = 2.0  # when a 429/503 names no Retry-After
MAX_WAIT_S = 120.0
_STATUS_RANK = {"added": 3, "replaced": 2, "unchanged": 1}


class RemoteError(Exception):
    """The run cannot go on (bad key, bad collection, server unreachable)."""


@dataclass(slots=True)
class Outcome:
    """What became of one file: its documents' results, or why it failed."""
    source: str
    status: str  # added, replaced, unchanged (the most telling of its documents), failed
    documents: dict[str, int]  # per document status: how many
    chunks: int = 0
    detail: str = ""


def retry_after_s(headers: Any) -> float:
    """The server's wait: ``retry-after-ms`` if sent (exact), else ``Retry-After``
    seconds; a little is added, since a rounded value may be early."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return min(MAX_WAIT_S, max(0.0, float(raw) * scale) + 0.1)
        except ValueError:
            continue  # an HTTP date: take the default
    return DEFAULT_WAIT_S


def documents_url(url: str, collection: str) -> str:
    """The endpoint for a gateway given as ``http://host:port`` or ``.../v1``."""
    base = url.rstrip("/").removesuffix("/v1")
    return f"{base}/v1/collections/{collection}/documents"


class RemoteIngest:
    def __init__(self, session: aiohttp.ClientSession, url: str, key: str | None,
                 collection: str, metadata: dict[str, Any],
                 say: Callable[[str], None]) -> None:
        self.session = session
        self.url = documents_url(url, collection)
        self.headers = {"authorization": f"Bearer {key}"} if key else {}
        self.metadata = metadata
        self.say = say

    def _form(self, files: list[tuple[str, bytes]]) -> aiohttp.FormData:
        # Unquoted: the server takes the file name as the document's source
        # (as sent, slashes included), and does not percent-decode it.
        form = aiohttp.FormData(quote_fields=False)
        if self.metadata:
            form.add_field("metadata", orjson.dumps(self.metadata).decode(),
                           content_type="application/json")
        for source, data in files:
            form.add_field("file", data, filename=source,
                           content_type="application/octet-stream")
        return form

    async def _post(self, files: list[tuple[str, bytes]]) -> tuple[int, Any, Any]:
        try:
            async with self.session.post(self.url, data=self._form(files),
                                         headers=self.headers) as resp:
                raw = await resp.read()
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = {"error": {"message": raw[:300].decode("utf-8", "replace")}}
                return resp.status, body, resp.headers
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if isinstance(e, aiohttp.ClientConnectorError):
                raise RemoteError(f"cannot reach {self.url}: {e}") from None
            # A server refusing before it reads the body (the per-tenant
            # ingestion slot) may close while a large batch is still being
            # sent: the 429 is lost, so treat it as one.
            return 503, {"error": {"message": f"connection lost ({type(e).__name__})"}}, {}
        except (aiohttp.ClientError, TimeoutError) as e:
            raise RemoteError(f"{self.url}: {type(e).__name__}: {e}") from None

    async def send(self, files: list[tuple[str, bytes]]) -> list[Outcome]:
        """Send one batch; an outcome for every file of it."""
        pending = list(files)
        failed: list[Outcome] = []
        retries = 0
        while pending:
            status, body, headers = await self._post(pending)
            if status == 200:
                return failed + _outcomes(pending, body.get("data", []))
            error = body.get("error") if isinstance(body, dict) else None
            error = error if isinstance(error, dict) else {}
            message = f"{status} {error.get('message') or 'error'}"
            if status in (429, 503) and retries < MAX_RETRIES:
                retries += 1
                wait = retry_after_s(headers)
                self.say(f"{message} (waiting {wait:.1f}s, then retrying)")
                await asyncio.sleep(wait)
                continue
            names = [s for s, _ in pending]
            if status == 400 and error.get("param") in names:
                bad = error["param"]
                failed.append(Outcome(bad, "failed", {}, detail=message))
                pending = [(s, d) for s, d in pending if s != bad]
                continue
            if status == 413 and len(pending) > 1:
                half = len(pending) // 2
                return failed + await self.send(pending[:half]) + await self.send(pending[half:])
            if status in (413, 429, 503):  # too large alone, or the retries ran out
                return failed + [Outcome(s, "failed", {}, detail=message) for s in names]
            raise RemoteError(f"{self.url}: {message}")
        return failed


def _outcomes(files: list[tuple[str, bytes]], results: list[dict[str, Any]]) -> list[Outcome]:
    """Results per document (a JSONL file holds several: ``source#id``) grouped by file."""
    by_file = {source: Outcome(source, "unchanged", {}) for source, _ in files}
    for r in results:
        out = by_file.get(str(r.get("source", "")).split("#", 1)[0])
        if out is None:
            continue
        status = str(r.get("status"))
        out.documents[status] = out.documents.get(status, 0) + 1
        out.chunks += int(r.get("chunks") or 0)
        if _STATUS_RANK.get(status, 0) > _STATUS_RANK.get(out.status, 0):
            out.status = status
    return list(by_file.values())
