"""A scriptable fake model for tests and benchmarks.

One behaviour model (:class:`FakeBehavior`) and one word stream
(:class:`FakeWords`) are shared by the in-process :class:`FakeProvider` and the
standalone HTTP upstream in :mod:`seawall.providers.fake_server`, so a test
that scripts "429 then slow tokens" gets the same behaviour whether it talks
to the provider directly or through a real socket.

Timing is deterministic and every wait is an ``asyncio`` sleep, so closing the
stream or cancelling its task stops generation at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import msgspec

from seawall.api.wire import ChatCompletionRequest
from seawall.config import FakeProviderSettings
from seawall.errors import InvalidRequest, RateLimited, SeawallError, UpstreamError
from seawall.providers.base import (
    ChatCall,
    Chunk,
    Embeddings,
    Provider,
    ProviderStatus,
    completion_id,
    make_chunk,
    usage_chunk,
)

_WORD = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class FakeBehavior:
    """What the fake model does for one request."""

    text: str | None = None  # None: echo the last user message's text
    ttft_s: float = 0.0  # delay before the first output (role chunk / first event)
    tokens_per_s: float = 0.0  # 0: no delay between word chunks
    error_status: int | None = None  # fail with this HTTP status before any output
    retry_after_s: float | None = None  # sent with error_status (Retry-After)
    disconnect_after_chunks: int | None = None  # cut the stream after N content chunks
    hang: bool = False  # never answer at all

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.tokens_per_s < 0:
            raise ValueError("ttft_s and tokens_per_s must be >= 0")
        if self.error_status is not None and not 400 <= self.error_status <= 599:
            raise ValueError(f"error_status must be an HTTP error status (400-599), "
                             f"not {self.error_status}")
        if self.disconnect_after_chunks is not None and self.disconnect_after_chunks < 0:
            raise ValueError("disconnect_after_chunks must be >= 0")

    @classmethod
    def from_settings(cls, settings: FakeProviderSettings) -> FakeBehavior:
        return cls(
            text=settings.text,
            ttft_s=settings.ttft_s,
            tokens_per_s=settings.tokens_per_s,
            error_status=settings.error_status,
            retry_after_s=settings.retry_after_s,
            disconnect_after_chunks=settings.disconnect_after_chunks,
            hang=settings.hang,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FakeBehavior:
        """Build from JSON (the ``/_fake/script`` body); unknown keys are an error
        so a misspelt field in a test fails loudly instead of being ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fake behaviour field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        try:
            return msgspec.convert(dict(data), cls, strict=False)
        except msgspec.ValidationError as e:
            raise ValueError(f"invalid fake behaviour: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FakeFailure(Exception):
    """The behaviour says: fail with this HTTP status (before any output)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"scripted fake failure: HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class FakeDisconnect(Exception):
    """The behaviour says: cut the connection here, mid-stream."""

    def __init__(self, after: int) -> None:
        super().__init__(f"scripted fake disconnect after {after} content chunk(s)")
        self.after = after


def split_words(text: str) -> list[str]:
    """``"Hello world"`` -> ``["Hello", " world"]``: joining gives the text back
    (minus trailing whitespace), and each piece counts as one token."""
    return _WORD.findall(text)


def count_words(text: str) -> int:
    return len(text.split())


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of an OpenAI message ``content`` (string or parts; non-text parts skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text") or "" for p in content
                    if isinstance(p, dict) and p.get("type") == "text")


def last_user_text(request: ChatCompletionRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user":
            return content_text(m.content)
    return ""


def prompt_word_count(request: ChatCompletionRequest) -> int:
    return sum(count_words(content_text(m.content)) for m in request.messages)


def fake_vector(text: str, dims: int = 8) -> list[float]:
    """A deterministic unit vector from a hash: equal texts embed equally."""
    digest = b""
    counter = 0
    while len(digest) < 2 * dims:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    raw = [int.from_bytes(digest[2 * i:2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


class FakeWords(AsyncIterator[str]):
    """The content pieces of one fake reply, paced by a :class:`FakeBehavior`.

    Two stages before output, both idempotent so an HTTP server can answer
    errors before sending headers and still delay the first byte after them:
    :meth:`begin` (hang, scripted error) and :meth:`ready` (``begin`` + TTFT).
    Iterating calls ``ready`` itself. After iteration, :attr:`finish_reason`
    is ``"stop"`` or ``"length"`` and :attr:`emitted` counts pieces given out.
    """

    def __init__(self, behavior: FakeBehavior, words: list[str],
                 finish_reason: str = "stop", stop_sequence: str | None = None) -> None:
        self.behavior = behavior
        self.words = words
        self.finish_reason = finish_reason
        self.stop_sequence = stop_sequence  # the stop sequence that cut the text, if any
        self.emitted = 0
        self._begun = False
        self._ready = False

    @classmethod
    def for_prompt(cls, behavior: FakeBehavior, prompt: str, limit: int | None = None,
                   stop: Iterable[str] = ()) -> FakeWords:
        """The reply to ``prompt``: scripted text or an echo, cut at the first stop
        sequence and at ``limit`` words (one word = one token)."""
        text = prompt if behavior.text is None else behavior.text
        finish, hit = "stop", None
        cut = len(text)
        for s in stop:
            i = text.find(s) if s else -1
            if 0 <= i < cut:
                cut, hit = i, s
        words = split_words(text[:cut])
        if limit is not None and len(words) > limit:
            words, finish, hit = words[:limit], "length", None
        return cls(behavior, words, finish, hit)

    async def begin(self) -> None:
        """Hang forever or raise :class:`FakeFailure` if the behaviour says so."""
        if self._begun:
            return
        b = self.behavior
        if b.hang:
            await _forever()
        self._begun = True
        if b.error_status is not None:
            raise FakeFailure(b.error_status, b.retry_after_s)

    async def ready(self) -> None:
        """:meth:`begin`, then wait out the time to first token."""
        await self.begin()
        if not self._ready:
            self._ready = True
            if self.behavior.ttft_s > 0:
                await asyncio.sleep(self.behavior.ttft_s)

    def __aiter__(self) -> FakeWords:
        return self

    async def __anext__(self) -> str:
        if not self._ready:
            await self.ready()
        b = self.behavior
        if b.disconnect_after_chunks is not None and self.emitted >= b.disconnect_after_chunks:
            raise FakeDisconnect(self.emitted)
        if self.emitted >= len(self.words):
            raise StopAsyncIteration
        if self.emitted and b.tokens_per_s > 0:
            await asyncio.sleep(1.0 / b.tokens_per_s)
        word = self.words[self.emitted]
        self.emitted += 1
        return word

    async def collect(self) -> str:
        """The whole reply at the pace of the stream (for non-streaming answers)."""
        return "".join([w async for w in self])


def fake_words(behavior: FakeBehavior, request: ChatCompletionRequest) -> FakeWords:
    """The reply to an OpenAI request: honours ``max_tokens`` / ``max_completion_tokens``
    (finish reason ``"length"`` when cut) and ``stop``."""
    return FakeWords.for_prompt(behavior, last_user_text(request), request.output_limit,
                                request.stop_list)


def failure_error(provider: str, failure: FakeFailure) -> SeawallError:
    """The Seawall error a real upstream answering ``failure.status`` would map to."""
    status = failure.status
    msg = f"fake provider {provider!r}: scripted HTTP {status}"
    if status == 429:
        return RateLimited(msg, retry_after=failure.retry_after)
    if status >= 500:
        return UpstreamError(msg, status=502, upstream_status=status,
                             retry_after=failure.retry_after)
    return InvalidRequest(msg, status=status)


class FakeProvider(Provider):
    """In-process fake model. ``behavior`` may be replaced at any time by a test;
    the counters say how calls ended (``cancelled`` = the consumer closed the
    stream before the end, which must stop generation)."""

    type = "fake"
    supports_tools = False

    def __init__(self, name: str, settings: FakeProviderSettings) -> None:
        super().__init__(name)
        self.settings = settings
        self.behavior = FakeBehavior.from_settings(settings)
        self.calls = 0
        self.active = 0
        self.completed = 0
        self.cancelled = 0
        self.failed = 0

    def status(self) -> ProviderStatus:
        return ProviderStatus(ready=True, extra={"calls": self.calls, "active": self.active})

    async def chat(self, call: ChatCall) -> AsyncGenerator[Chunk, None]:
        request = call.request
        words = fake_words(self.behavior, request)
        cid, created, model = completion_id(), int(time.time()), call.model
        self.calls += 1
        self.active += 1
        outcome = "cancelled"
        try:
            try:
                await words.ready()
            except FakeFailure as f:
                raise failure_error(self.name, f) from None
            yield make_chunk(cid, model, created, {"role": "assistant", "content": ""})
            try:
                async for word in words:
                    yield make_chunk(cid, model, created, {"content": word})
            except FakeDisconnect as d:
                raise UpstreamError(
                    f"fake provider {self.name!r}: scripted disconnect after {d.after} chunk(s)",
                    code="upstream_disconnected",
                ) from None
            yield make_chunk(cid, model, created, finish_reason=words.finish_reason)
            outcome = "completed"
            yield usage_chunk(cid, model, created, prompt_word_count(request), words.emitted)
        except SeawallError:
            outcome = "failed"
            raise
        finally:
            self.active -= 1
            if outcome == "completed":
                self.completed += 1
            elif outcome == "failed":
                self.failed += 1
            else:
                self.cancelled += 1

    async def embed(self, inputs: list[str], model: str) -> Embeddings:
        words = FakeWords(self.behavior, [])
        try:
            await words.ready()
        except FakeFailure as f:
            raise failure_error(self.name, f) from None
        return Embeddings(vectors=[fake_vector(t) for t in inputs],
                          prompt_tokens=sum(count_words(t) for t in inputs))

