"""What the Files and Batch APIs store, and the contract of every backend.

Embedded: seawall/batches/sqlite_store.py (file contents on disk under
``data_dir/files``, metadata in SQLite). Shared: seawall/batches/pg_store.py
(contents as 1 MB bytea chunks in Postgres). One contract suite:
tests/contract/test_batch_store.py. Everything is tenant-scoped: a row of
another tenant is "not found".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

CHUNK = 1 << 20  # contents move in pieces of this size, never whole

# The columns of a batch row, in storage order.
BATCH_COLUMNS = ("id", "tenant", "endpoint", "input_file_id", "completion_window", "status",
                 "metadata", "auth", "errors", "output_file_id", "error_file_id", "total",
                 "completed", "failed", "created_at", "in_progress_at", "finalizing_at",
                 "completed_at", "failed_at", "cancelling_at", "cancelled_at", "expires_at")
FILE_COLUMNS = ("id", "tenant", "filename", "purpose", "bytes", "created_at")


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass
class StoredFile:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: float

    def public(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes,
                "created_at": int(self.created_at), "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "status_details": None}


@dataclass
class Batch:
    id: str
    tenant: str
    endpoint: str
    input_file_id: str
    completion_window: str = "24h"
    status: str = "validating"
    metadata: dict[str, str] | None = None
    auth: dict[str, Any] = field(default_factory=dict)  # who created it (never a secret)
    errors: list[dict[str, Any]] | None = None  # why validation refused the whole file
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: float = field(default_factory=time.time)
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    expires_at: float | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """OpenAI's batch object."""
        def t(v: float | None) -> int | None:
            return None if v is None else int(v)
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint,
            "errors": None if not self.errors else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": t(self.created_at),
            "in_progress_at": t(self.in_progress_at), "expires_at": t(self.expires_at),
            "finalizing_at": t(self.finalizing_at), "completed_at": t(self.completed_at),
            "failed_at": t(self.failed_at), "expired_at": None,
            "cancelling_at": t(self.cancelling_at), "cancelled_at": t(self.cancelled_at),
            "request_counts": {"total": self.total, "completed": self.completed,
                               "failed": self.failed},
            "metadata": self.metadata,
        }


@dataclass
class LineResult:
    """One input line's outcome: ``record`` is its output- or error-file line."""
    line: int
    custom_id: str | None
    ok: bool
    record: bytes


class BatchStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- files --

    async def put_file(self, tenant: str, filename: str, purpose: str,
                       chunks: AsyncIterator[bytes], file_id: str | None = None) -> StoredFile:
        """Store the pieces as they come (never the whole in memory)."""
        ...

    async def get_file(self, file_id: str, tenant: str | None = None) -> StoredFile | None: ...

    async def list_files(self, tenant: str, purpose: str | None = None,
                         after: str | None = None, limit: int = 20) -> list[StoredFile]:
        """Newest first; ``after``: the last id of the previous page."""
        ...

    async def delete_file(self, file_id: str, tenant: str) -> bool: ...

    async def expire(self, before: float) -> int:
        """Retention: delete finished batches (with their line results) and files
        created before ``before``; a file a running batch reads stays. Returns
        how many batches and files went."""
        ...

    def read_file(self, file_id: str) -> AsyncIterator[bytes]:
        """The content in pieces of at most CHUNK bytes."""
        ...

    # -- batches --

    async def create_batch(self, batch: Batch) -> None: ...

    async def get_batch(self, batch_id: str, tenant: str | None = None) -> Batch | None: ...

    async def list_batches(self, tenant: str | None, after: str | None = None,
                           limit: int = 20) -> list[Batch]:
        """Newest first; ``after``: the last id of the previous page;
        ``tenant`` None: every tenant's (the operator's admin list)."""
        ...

    async def update_batch(self, batch_id: str, **values: Any) -> None: ...

    async def set_status(self, batch_id: str, status: str, when: str | None = None,
                         only_from: tuple[str, ...] = ()) -> bool:
        """Move to ``status`` (and stamp ``when``), only from one of
        ``only_from`` if given; False if the batch was not in one of them."""
        ...

    # -- lines: each stored once, by (batch, line) --

    async def put_line(self, batch_id: str, result: LineResult) -> bool:
        """Store a line's outcome; False (nothing changes) if it was stored before."""
        ...

    async def done_lines(self, batch_id: str, lo: int, hi: int) -> set[int]:
        """The line numbers in [lo, hi) that have an outcome."""
        ...

    async def first_line_of(self, batch_id: str, custom_id: str, line: int) -> int:
        """The first line that claimed ``custom_id`` (``line`` if none did)."""
        ...

    async def counts(self, batch_id: str) -> tuple[int, int]:
        """(completed, failed) lines so far."""
        ...

    def records(self, batch_id: str, ok: bool) -> AsyncIterator[bytes]:
        """The stored output (ok) or error records, in line order, one
        newline-terminated line each, read a page at a time."""
        ...
