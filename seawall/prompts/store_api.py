"""What the prompt registry needs from a store: the one interface both
backends implement (SQLite in seawall/prompts/store.py, Postgres in
seawall/prompts/pg_store.py; tests/contract/test_prompt_store.py runs one
suite against each).

Synchronous, as the registry is: the CLI has no event loop, and a local
store's per-request read is cheaper than a hop to a thread. A store over the
network says so (``remote``), and the request path then reads it on a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from seawall.prompts.model import LabelMove, PromptSpec, PromptVersion
from seawall.prompts.store import PromptSummary, PushOutcome

__all__ = ["PromptStore"]


class PromptStore(Protocol):
    remote: bool  # True: reads wait on the network (do them off the event loop)

    def open(self) -> PromptStore: ...

    def close(self) -> None: ...

    def generation(self) -> int:
        """Moves on every change by any process (what a registry's cache is keyed to)."""
        ...

    def peek_generation(self) -> int | None:
        """The generation if it is known without waiting on I/O, else None."""
        ...

    def version(self, name: str, version: int) -> PromptVersion | None: ...

    def latest(self, name: str) -> PromptVersion | None: ...

    def label_version(self, name: str, label: str) -> int | None: ...

    def labels(self, name: str) -> dict[str, int]: ...

    def versions(self, name: str) -> list[PromptVersion]: ...

    def moves(self, name: str, label: str | None = None) -> list[LabelMove]: ...

    def summaries(self) -> list[PromptSummary]: ...

    def push(self, name: str, spec: PromptSpec, labels: Sequence[str], *,
             label_new: Sequence[str] = (), author: str | None = None,
             source: str | None = None) -> PushOutcome: ...

    def set_label(self, name: str, label: str, version: int,
                  actor: str | None = None) -> LabelMove | None: ...

    def rollback(self, name: str, label: str, actor: str | None = None) -> LabelMove: ...
