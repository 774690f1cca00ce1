"""The job queue's contract: what a job is and what every backend does.

Jobs are rows (SQLite in the embedded setup, Postgres when shared). A runner
*claims* a job with a lease; heartbeats renew the lease; a job whose lease
lapses (its runner died) is claimed again. So execution is at least once,
while the result is committed once: only the lease holder of a running job
can complete it, and completing ends the lease. No library covers both
backends (procrastinate, pgqueuer and the like are Postgres-only), hence this
module: see docs/jobs.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from seawall.config import JobSettings
from seawall.errors import SeawallError


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the handler said it cannot succeed (PermanentJobError)
    DEAD = "dead"  # failed max_attempts times (or its lease lapsed that often)
    CANCELLED = "cancelled"


FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED)
ACTIVE = (JobState.QUEUED, JobState.RUNNING)

Heartbeat = Literal["held", "lost", "cancel"]

# Columns in the order every backend stores and returns them.
COLUMNS = ("id", "tenant", "kind", "payload", "priority", "state", "attempts",
           "max_attempts", "run_after", "lease_owner", "lease_until", "cancel_requested",
           "result", "error", "created_at", "updated_at")


@dataclass
class Job:
    id: str
    tenant: str
    kind: str
    payload: Any
    priority: int = 0
    state: JobState = JobState.QUEUED
    attempts: int = 0
    max_attempts: int = 3
    run_after: float = 0.0
    lease_owner: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    result: Any = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        """The job as JSON-ready data (CLI, API)."""
        d = {c: getattr(self, c) for c in COLUMNS}
        d["state"] = str(self.state)
        return d


@dataclass
class QueueStats:
    """Active jobs per kind and the age of the oldest runnable queued job."""
    queued: dict[str, int]
    running: dict[str, int]
    oldest_queued_s: float


class QueueFull(SeawallError):
    """Too many active jobs, in total or for one tenant: the API answers 429
    with ``Retry-After``."""
    status = 429
    type = "rate_limit_error"
    code = "job_queue_full"

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message, retry_after=retry_after_s)


class PermanentJobError(Exception):
    """Raised by a handler for a job that no retry can fix (bad payload):
    the job ends ``failed`` at once."""


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def full_message(total: int, tenant_active: int, tenant: str, settings: JobSettings) -> str:
    if tenant_active >= settings.max_depth_per_tenant:
        return (f"tenant {tenant!r} has {tenant_active} jobs queued or running, its limit "
                f"(jobs.max_depth_per_tenant = {settings.max_depth_per_tenant}); retry later")
    return (f"the job queue is full: {total} jobs queued or running (jobs.max_depth = "
            f"{settings.max_depth}); retry later")


RETRY_AFTER_S = 5.0  # what a full queue tells the client to wait


class JobQueue(Protocol):
    """Every backend: SQLite (seawall/jobs/sqlite_queue.py) and Postgres
    (seawall/jobs/pg_queue.py), one contract suite (tests/contract/test_jobs.py)."""

    settings: JobSettings

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, kind: str, payload: Any, *, tenant: str = "default",
                      priority: int = 0, max_attempts: int | None = None,
                      run_after: float | None = None, job_id: str | None = None) -> Job:
        """Add a job (``priority``: lower runs first; ``run_after``: a unix time
        before which it does not start). Giving ``job_id`` makes it idempotent:
        an existing job of that id is returned unchanged. QueueFull when
        ``max_depth`` or ``max_depth_per_tenant`` active jobs exist."""
        ...

    async def claim(self, n: int, owner: str, lease_s: float,
                    kinds: Sequence[str] | None = None) -> list[Job]:
        """Up to ``n`` runnable jobs (by priority, then age), now running under
        ``owner``'s lease. Two claimers never get the same job. Jobs whose
        lease lapsed are claimed again (or dead, after max_attempts)."""
        ...

    async def heartbeat(self, job_id: str, owner: str, lease_s: float) -> Heartbeat:
        """Extend the lease: ``held``; ``cancel`` = held but cancellation was
        asked (stop and :meth:`release`); ``lost`` = no longer ours."""
        ...

    async def complete(self, job_id: str, owner: str, result: Any) -> bool:
        """Commit the result; False (and nothing changes) unless ``owner``
        still holds the job's lease."""
        ...

    async def fail(self, job_id: str, owner: str, error: str,
                   retry: bool = True) -> JobState | None:
        """A failed run: queued again after a backoff, or ``dead`` after
        max_attempts, or ``failed`` with ``retry=False``. None if not ours."""
        ...

    async def release(self, job_id: str, owner: str) -> JobState | None:
        """Give a job back unfinished (runner stopping): queued again at once,
        the run not counted, or ``cancelled`` if that was asked."""
        ...

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job | None:
        """A queued job is cancelled at once; a running one is flagged and
        its runner stops it. None if no such job (of ``tenant``)."""
        ...

    async def retry(self, job_id: str, tenant: str | None = None) -> Job | None:
        """A dead, failed or cancelled job queued again with fresh attempts."""
        ...

    async def get(self, job_id: str, tenant: str | None = None) -> Job | None: ...

    async def list(self, *, state: str | None = None, kind: str | None = None,
                   tenant: str | None = None, limit: int = 100,
                   before: tuple[float, str] | None = None) -> list[Job]:
        """Newest first (then by id); ``before``: the (created_at, id) of the
        previous page's last job."""
        ...

    async def stats(self) -> QueueStats: ...

    async def purge(self, finished_before: float, batch: int = 5000) -> int:
        """Delete up to ``batch`` jobs that ended before ``finished_before``."""
        ...

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each enqueue in this process (wakes runners)."""
        ...
