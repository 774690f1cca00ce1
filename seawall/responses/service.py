"""Stored responses for the routes: the store, conversation rebuilding and
retention, built once per process from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from seawall.config import ResponsesSettings
from seawall.errors import NotFound
from seawall.ml.tokens import TokenCounter
from seawall.responses.conversation import Conversation, build, turn_messages
from seawall.responses.store_api import ResponseStore, StoredResponse

log = logging.getLogger("seawall.responses")

PURGE_EVERY_S = 600.0


def not_found(response_id: str) -> NotFound:
    return NotFound(f"No response with id {response_id[:128]!r} (it may have been deleted, "
                    "expired, or belong to another tenant).", param="response_id",
                    code="response_not_found")


class ResponseService:
    def __init__(self, settings: ResponsesSettings, store: ResponseStore,
                 tokens: TokenCounter) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self._purge: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()
        if self.settings.retention_days is not None:
            self._purge = asyncio.create_task(self._purge_loop())

    async def close(self) -> None:
        if self._purge is not None:
            self._purge.cancel()
            with contextlib.suppress(BaseException):
                await self._purge
        await self.store.close()

    async def _purge_loop(self) -> None:
        while True:
            try:
                n = await self.store.purge_expired(time.time())
                if n:
                    log.info("deleted %d expired stored responses", n, extra={"deleted": n})
            except Exception:
                log.exception("deleting expired stored responses failed")
            await asyncio.sleep(PURGE_EVERY_S)

    def expires_at(self, created_at: float) -> float | None:
        days = self.settings.retention_days
        return None if days is None else created_at + days * 86_400

    def budget(self, model: str) -> int:
        return self.settings.model_chain_tokens.get(model, self.settings.max_chain_tokens)

    async def conversation(self, tenant: str, model: str, instructions: str | None,
                           previous_id: str | None,
                           current: list[dict[str, Any]]) -> Conversation:
        """The messages to send: instructions, earlier turns that fit, the new input."""
        chain: list[StoredResponse] = []
        if previous_id is not None:
            chain = await self.store.chain(tenant, previous_id, self.settings.max_chain_turns)
            if not chain:
                raise not_found(previous_id)
        return await asyncio.to_thread(build, instructions, chain, current,
                                       self.budget(model), self.tokens.count_messages)

    async def save(self, r: StoredResponse) -> None:
        """Store ``r``, with its turn's tokens counted once (on a worker thread:
        counting grows with the turn), so trimming a long conversation later
        never re-tokenizes it."""
        r.tokens = await asyncio.to_thread(self.tokens.count_messages, turn_messages(r))
        await self.store.put(r)

    async def get(self, tenant: str, response_id: str) -> StoredResponse:
        found = await self.store.get(tenant, response_id)
        if found is None:
            raise not_found(response_id)
        return found
