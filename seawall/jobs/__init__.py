"""The durable job queue everything slow runs on (docs/jobs.md)."""

from seawall.jobs.queue import (
    Job,
    JobQueue,
    JobState,
    PermanentJobError,
    QueueFull,
    QueueStats,
)

__all__ = ["Job", "JobQueue", "JobState", "PermanentJobError", "QueueFull", "QueueStats"]
