"""Job kinds built into every runner.

``sleep`` exists for tests, benchmarks and drills (kill a worker mid-job and
watch another finish it): payload ``{"seconds": s, "result": any}``; it
sleeps, then returns who ran it. ``{"fail": "retry"}`` or ``{"fail":
"permanent"}`` makes it fail that way instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from seawall.jobs.queue import Job, PermanentJobError

if TYPE_CHECKING:
    from seawall.jobs.runner import JobRunner

MAX_SLEEP_S = 3600.0


async def sleep(job: Job) -> dict[str, Any]:
    p = job.payload if isinstance(job.payload, dict) else {}
    seconds = p.get("seconds", 0)
    if not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SLEEP_S:
        raise PermanentJobError(f"sleep: seconds must be a number from 0 to {MAX_SLEEP_S:g}")
    await asyncio.sleep(seconds)
    if p.get("fail") == "permanent":
        raise PermanentJobError("sleep: asked to fail")
    if p.get("fail") == "retry":
        raise RuntimeError("sleep: asked to fail (retryable)")
    return {"slept": seconds, "worker": job.lease_owner, "attempt": job.attempts,
            "result": p.get("result")}


def register_builtins(runner: JobRunner) -> None:
    runner.register("sleep", sleep)
