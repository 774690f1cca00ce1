"""``seawall jobs``: look at and steer the job queue (works beside running
servers and workers, on the SQLite file or the shared Postgres)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click
import orjson

from seawall.cli_common import config_option, settings_from
from seawall.jobs.queue import FINISHED, Job, JobQueue, JobState, QueueFull


def _on_queue(config: str | None, work: Callable[[JobQueue], Awaitable[Any]]) -> Any:
    from seawall.store.factory import Stores
    from seawall.store.migrate import SchemaError

    async def go() -> Any:
        stores = Stores(settings_from(config))
        queue = stores.jobs()
        try:
            await stores.check_schema()
            await queue.open()
            return await work(queue)
        except SchemaError as e:
            raise click.ClickException(str(e)) from None
        finally:
            await queue.close()
            await stores.close()

    return asyncio.run(go())


def _audit(config: str | None, action: str, job: Job) -> None:
    """One operator action on a job, in the audit log."""
    from seawall.audit.cli import cli_auditor

    with cli_auditor(settings_from(config, announce=False)) as audit:
        audit.record(action, tenant=job.tenant, target=job.id,
                     after={"state": str(job.state), "kind": job.kind,
                            "attempts": job.attempts, "max_attempts": job.max_attempts})


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    d = time.time() - t
    if d < 0:
        return f"in {-d:.0f}s"
    return f"{d:.0f}s ago" if d < 3600 else f"{d / 3600:.1f}h ago"


def _line(j: Job) -> str:
    return (f"{j.id}  {j.state:<9}  {j.kind:<12}  tenant={j.tenant}  prio={j.priority}  "
            f"attempts={j.attempts}/{j.max_attempts}  created {_ago(j.created_at)}")


def _json(j: Job) -> str:
    return orjson.dumps(j.public()).decode()


@click.group("jobs")
def jobs() -> None:
    """The durable job queue: list, show, retry, cancel (docs/jobs.md)."""


@jobs.command("list")
@config_option
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--kind")
@click.option("--tenant")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
def list_jobs(config: str | None, state: str | None, kind: str | None, tenant: str | None,
              limit: int, as_json: bool) -> None:
    """Jobs, newest first, with queue depth and the oldest waiting job's age."""
    async def work(q: JobQueue) -> tuple[list[Job], Any]:
        return await q.list(state=state, kind=kind, tenant=tenant, limit=limit), await q.stats()

    found, stats = _on_queue(config, work)
    for j in found:
        click.echo(_json(j) if as_json else _line(j))
    if not as_json:
        click.echo(f"queued {sum(stats.queued.values())}, running "
                   f"{sum(stats.running.values())}, oldest waiting "
                   f"{stats.oldest_queued_s:.1f}s", err=True)


@jobs.command()
@config_option
@click.argument("job_id")
def show(config: str | None, job_id: str) -> None:
    """One job as JSON: payload, state, lease, result or error."""
    job = _on_queue(config, lambda q: q.get(job_id))
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    click.echo(orjson.dumps(job.public(), option=orjson.OPT_INDENT_2).decode())


@jobs.command()
@config_option
@click.argument("job_id")
def retry(config: str | None, job_id: str) -> None:
    """Queue a dead, failed or cancelled job again, with fresh attempts."""
    job = _on_queue(config, lambda q: q.retry(job_id))
    if job is None:
        raise click.ClickException(f"no dead, failed or cancelled job {job_id}")
    _audit(config, "job.retry", job)
    click.echo(_line(job))


@jobs.command()
@config_option
@click.argument("job_id")
def cancel(config: str | None, job_id: str) -> None:
    """Cancel a job: a queued one at once, a running one by its runner."""
    job = _on_queue(config, lambda q: q.cancel(job_id))
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    if job.state in FINISHED and job.state is not JobState.CANCELLED:
        raise click.ClickException(f"job {job_id} already ended: {job.state}")
    _audit(config, "job.cancel", job)
    note = "  (its runner stops it)" if job.state is JobState.RUNNING else ""
    click.echo(_line(job) + note)


@jobs.command()
@config_option
@click.argument("kind")
@click.option("--payload", default="null", help="JSON payload.")
@click.option("--tenant", default="default", show_default=True)
@click.option("--priority", type=int, default=0, show_default=True, help="Lower runs first.")
@click.option("--delay-s", type=click.FloatRange(0), default=0.0, help="Start no sooner.")
def enqueue(config: str | None, kind: str, payload: str, tenant: str, priority: int,
            delay_s: float) -> None:
    """Add a job (for drills: `seawall jobs enqueue sleep --payload '{"seconds": 5}'`)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--payload") from None
    try:
        job = _on_queue(config, lambda q: q.enqueue(
            kind, data, tenant=tenant, priority=priority, run_after=time.time() + delay_s))
    except QueueFull as e:
        raise click.ClickException(str(e)) from None
    _audit(config, "job.enqueue", job)
    click.echo(job.id)
