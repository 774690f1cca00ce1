"""The prompt registry: the one service the CLI, the API and the pipeline
stage use to push, find, label, roll back and render prompts.

Lookups on the request path are cached in process and the cache is keyed to
the store's generation, read once per lookup (one primary-key read of a tiny
row, a few microseconds; see ``tests/unit/test_prompts.py::test_lookup_cost``):
so a ``seawall prompts rollback`` run by another process is used by the very
next request, with no polling interval and no restart. On Postgres the
generation is read at most every 0.5 s (seawall/prompts/pg_store.py), and
the request path (:meth:`PromptRegistry.aresolve`) reads the store on a
thread when its cache cannot answer.
"""

from __future__ import annotations

import asyncio
import builtins
import difflib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seawall.config import Settings
from seawall.prompts.errors import PromptNotFound
from seawall.prompts.files import dump_yaml
from seawall.prompts.model import (
    LATEST,
    PRODUCTION,
    LabelMove,
    PromptSpec,
    PromptVersion,
    check_label,
    check_name,
    spec_from_mapping,
)
from seawall.prompts.render import CompiledPrompt, compile_spec, environment
from seawall.prompts.store import PromptSummary, PushOutcome, SqlitePromptStore
from seawall.prompts.store_api import PromptStore

__all__ = ["PromptHistory", "PromptRegistry", "ResolvedPrompt", "prompts_path"]


def prompts_path(settings: Settings) -> Path:
    """Where the registry lives: the one place that decides it."""
    return settings.prompts_path


@dataclass(frozen=True, slots=True)
class ResolvedPrompt:
    """A version, ready to render."""

    version: PromptVersion
    compiled: CompiledPrompt

    @property
    def ref(self) -> str:
        return self.version.ref

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.compiled.render(variables)


@dataclass(frozen=True, slots=True)
class PromptHistory:
    name: str
    versions: list[PromptVersion]
    labels: dict[str, int]
    moves: list[LabelMove]


class PromptRegistry:
    """Versioned prompts in ``store`` (the composition root's
    ``Stores.prompt_store()``, or a path: a SQLite file there), shared by every
    process that opens it."""

    def __init__(self, store: PromptStore | str | Path, max_cached: int = 4096) -> None:
        if isinstance(store, str | Path):
            store = SqlitePromptStore(store)
        self.store: PromptStore = store
        self.env = environment()
        self.max_cached = max_cached
        self._generation = -1
        self._lock = threading.Lock()  # the cache and its generation change together
        self._resolved: dict[tuple[str, str | None, int | None], ResolvedPrompt] = {}
        # By (name@version, content hash): versions are immutable, so never stale.
        self._compiled: dict[tuple[str, str], CompiledPrompt] = {}

    def close(self) -> None:
        self.store.close()

    def invalidate(self) -> None:
        """Forget every resolved prompt (a label moved elsewhere: a change notice)."""
        with self._lock:
            self._generation = -1
            self._resolved.clear()

    # Pushing and labels.

    def push(self, name: str, spec: PromptSpec | Mapping[str, Any],
             labels: Sequence[str] = (), *, label_new: Sequence[str] = (PRODUCTION,),
             source: str | None = None, actor: str | None = None) -> PushOutcome:
        """A new version of ``name`` if the content changed (else the latest
        one again), with ``labels`` moved to it. A new prompt's first version
        also gets ``label_new`` (``production``): nothing can depend on a prompt
        that did not exist, and ``get(name)`` then works at once."""
        check_name(name)
        if not isinstance(spec, PromptSpec):
            spec = spec_from_mapping(spec, name)[1]
        for label in (*labels, *label_new):
            check_label(label)
        compile_spec(spec, self.env, name)  # syntax errors are refused now, not per request
        return self.store.push(name, spec, labels, label_new=label_new, author=actor,
                               source=source)

    def label(self, name: str, version: int, label: str,
              actor: str | None = None) -> LabelMove | None:
        """Point ``label`` at ``version`` (promote); None when it already did."""
        check_label(label)
        return self.store.set_label(name, label, version, actor)

    def rollback(self, name: str, label: str = PRODUCTION,
                 actor: str | None = None) -> LabelMove:
        """Move ``label`` back to where it pointed before its last move.
        Raises LabelError when there is nothing to go back to."""
        return self.store.rollback(name, label, actor)

    # Reading.

    def get(self, name: str, label: str | None = None,
            version: int | None = None) -> PromptVersion:
        """A version by number (which wins over a label: a caller that has
        both, e.g. an experiment arm's override, means the exact version),
        else by label (default ``production``; the virtual label ``latest`` is
        the newest version). Raises PromptNotFound."""
        if version is not None:
            found = self.store.version(name, version)
            if found is None:
                raise PromptNotFound(self._missing(name, f"has no version {version}"),
                                     param="prompt.version")
            return found
        label = label or PRODUCTION
        if label == LATEST:
            found = self.store.latest(name)
            if found is None:
                raise PromptNotFound(self._missing(name, ""), param="prompt.name")
            return found
        number = self.store.label_version(name, label)
        found = None if number is None else self.store.version(name, number)
        if found is None:
            raise PromptNotFound(self._missing(name, f"has no label {label!r}"),
                                 param="prompt.label")
        return found

    def _missing(self, name: str, what: str) -> str:
        latest = self.store.latest(name)
        if latest is None:
            return f"No prompt named {name!r}; push it with `seawall prompts push`."
        labels = ", ".join(f"{k}=v{v}" for k, v in self.store.labels(name).items()) or "none"
        return f"Prompt {name!r} {what} (versions 1-{latest.version}; labels: {labels})."

    def resolve(self, name: str, label: str | None = None,
                version: int | None = None) -> ResolvedPrompt:
        """:meth:`get`, compiled and cached until the store's generation moves:
        the request path's lookup."""
        generation = self.store.generation()
        key = (name, label, version)
        with self._lock:
            if generation != self._generation:
                self._resolved.clear()
                self._generation = generation
            hit = self._resolved.get(key)
        if hit is not None:
            return hit
        found = self.get(name, label, version)
        compiled = self._compiled.get((found.ref, found.content_hash))
        if compiled is None:
            compiled = compile_spec(found.spec, self.env, found.ref)
            if len(self._compiled) >= self.max_cached:
                self._compiled.clear()  # bounded: cheap to refill
            self._compiled[(found.ref, found.content_hash)] = compiled
        resolved = ResolvedPrompt(found, compiled)
        with self._lock:
            # Only under the generation it was read at: a lookup on another
            # thread may have seen a newer one (and a label move) meanwhile.
            if self._generation == generation:
                if len(self._resolved) >= self.max_cached:
                    self._resolved.clear()
                self._resolved[key] = resolved
        return resolved

    async def aresolve(self, name: str, label: str | None = None,
                       version: int | None = None) -> ResolvedPrompt:
        """:meth:`resolve` for the event loop: a local store is read in place
        (microseconds), a remote one on a thread unless the cache answers."""
        if not self.store.remote:
            return self.resolve(name, label, version)
        generation = self.store.peek_generation()
        if generation is not None and generation == self._generation:
            hit = self._resolved.get((name, label, version))
            if hit is not None:
                return hit
        return await asyncio.to_thread(self.resolve, name, label, version)

    def list(self) -> builtins.list[PromptSummary]:
        """Every prompt: latest version, how many, its labels."""
        return self.store.summaries()

    def history(self, name: str) -> PromptHistory:
        versions = self.store.versions(name)
        if not versions:
            raise PromptNotFound(self._missing(name, ""), param="prompt.name")
        return PromptHistory(name, versions, self.store.labels(name), self.store.moves(name))

    def diff(self, name: str, v1: int, v2: int) -> str:
        """A unified diff of the two versions in their file form ('' if equal)."""
        a, b = self.get(name, version=v1), self.get(name, version=v2)
        lines = difflib.unified_diff(
            dump_yaml(a.spec.document(name)).splitlines(keepends=True),
            dump_yaml(b.spec.document(name)).splitlines(keepends=True),
            fromfile=a.ref, tofile=b.ref)
        return "".join(lines)
