"""Single-flight: identical requests in flight at once share one upstream call.

The first request (the leader) hands its answer stream to a :class:`Flight`,
which pulls it on a task of its own and keeps every chunk; the leader and
each identical request that arrives meanwhile (followers) read the chunks
from the start, live, at their own pace. The upstream call belongs to the
flight, not to the leader: a leader that hangs up does not cut the
followers off; the call is cancelled only when every reader has left. A
failure reaches every reader at the same point of the stream, as it would
have reached each of them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from seawall.providers.base import StreamItem


class Flight:
    __slots__ = ("key", "items", "done", "error", "readers", "_task", "_wake", "leader")

    def __init__(self, key: bytes, leader: Any) -> None:
        self.key = key
        self.leader = leader  # the leader's RequestContext (cost, deployment)
        self.items: list[StreamItem] = []
        self.done = False
        self.error: BaseException | None = None
        self.readers = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self, stream: AsyncIterator[StreamItem]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump(stream))

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def _pump(self, stream: AsyncIterator[StreamItem]) -> None:
        try:
            async for item in stream:
                self.items.append(item)
                self._notify()
        except asyncio.CancelledError as e:
            self.error = e
        except Exception as e:
            self.error = e
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            self.done = True
            self._notify()

    async def landed(self) -> None:
        """Wait until the upstream answer has ended, however it ended."""
        if self._task is not None:
            await asyncio.wait({self._task})

    @property
    def complete(self) -> bool:
        return self.done and self.error is None

    async def read(self) -> AsyncIterator[StreamItem]:
        """Every chunk from the first; raises the flight's error where it happened."""
        self.readers += 1
        i = 0
        try:
            while True:
                items = self.items
                while i < len(items):
                    yield items[i]
                    i += 1
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                await self._wake.wait()
        finally:
            self.readers -= 1
            if self.readers == 0 and not self.done and self._task is not None:
                self._task.cancel()  # nobody is listening: stop the upstream call
