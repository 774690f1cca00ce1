"""A scriptable fake model for tests and benchmarks.

One behaviour model (:class:`FakeBehavior`) and one word stream
(:class:`FakeWords`) are shared by the in-process :class:`FakeProvider` and the
standalone HTTP upstream in :mod:`seawall.providers.fake_server`, so a test
that scripts "429 then slow tokens" gets the same behaviour whether it talks
to the provider directly or through a real socket.

Timing is deterministic and every wait is an ``asyncio`` sleep, so closing the
stream or cancelling its task stops generation at once.

Failure modes a behaviour can script (see :class:`FakeBehavior`): an error
status (``error_status``, optionally only for a share ``error_probability`` of
requests, drawn from a seedable ``random.Random``), no answer at all
(``hang``), and three ways for a stream to go wrong after N content chunks:
cut the connection (``disconnect_after_chunks``), send an event that is not
JSON (``malformed_after_chunks``) or go silent forever
(``stall_after_chunks``). ``headers`` adds response headers (HTTP server only).
For load tests, ``fill_max_tokens`` makes the reply exactly as long as the
request's token limit and ``prefill_tokens_per_s`` makes the time to first
token grow with the prompt, as with a real model.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import msgspec

from seawall.api.wire import ChatCompletionRequest, EmbeddingInputs
from seawall.config import FakeProviderSettings
from seawall.errors import InvalidRequest, RateLimited, SeawallError, UpstreamError
from seawall.providers.base import (
    ChatCall,
    Embeddings,
    Provider,
    ProviderStatus,
    StreamItem,
    completion_id,
    make_chunk,
    usage_chunk,
)

_WORD = re.compile(r"\s*\S+")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Scripting these would break the HTTP framing; disconnect_after_chunks does that on purpose.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
_RNG = random.Random()  # for error_probability when the caller brings no seeded one


@dataclass(frozen=True, slots=True)
class FakeBehavior:
    """What the fake model does for one request.

    Mid-stream faults (at most one of the three may be set) happen after N
    content chunks (N = 0: before the first word); a reply with fewer than N
    words completes normally. A non-streaming answer has no chunks, so there
    ``malformed_after_chunks`` gives, after the TTFT, a 200 whose JSON body is
    cut short (any N) and ``stall_after_chunks`` never answers (after
    generating N words).

    * ``malformed_after_chunks``: send garbage. Over HTTP, an SSE event whose
      data is ``{not json``, then the stream's terminator (``data: [DONE]`` /
      ``message_stop``) and a clean end, so the only defect is the bad event.
      In process: ``UpstreamError(code="upstream_bad_response")``.
    * ``stall_after_chunks``: go silent with the connection open until the
      client gives up (counted ``cancelled``).
    * ``headers``: extra response headers on every response to a request that
      got this behaviour, success or scripted error (a scripted
      ``retry_after_s`` still wins for ``retry-after`` / ``retry-after-ms``).
      HTTP server only; requests refused before a behaviour is taken
      (auth, validation) do not get them.
    * ``error_probability``: with ``error_status``, the share of requests that
      fail (one draw from the owner's ``random.Random`` per request when
      strictly between 0 and 1, so a seeded owner repeats the pattern); the
      rest are answered normally.
    * ``fill_max_tokens``: reply with exactly ``max_tokens`` /
      ``max_completion_tokens`` filler words ("lorem ipsum ..."), finish
      reason ``"length"``, ignoring ``text`` and stop sequences; a request
      without a limit (or answered with the fake tool call) gets the normal reply.
    * ``prefill_tokens_per_s``: add prompt words / this many seconds to the
      time to first token (0 = off).
    * ``filler_chars``: reply with exactly this many characters of filler
      ("lorem ipsum ..."), in pieces (chunks) of ``piece_chars``, ignoring
      ``text``, stop sequences and token limits: a huge answer for size caps
      (0 = off). Each piece counts as one token.
    """

    text: str | None = None  # None: echo the last user message's text
    ttft_s: float = 0.0  # delay before the first output (role chunk / first event)
    tokens_per_s: float = 0.0  # 0: no delay between word chunks
    error_status: int | None = None  # fail with this HTTP status before any output
    retry_after_s: float | None = None  # sent with error_status (Retry-After)
    disconnect_after_chunks: int | None = None  # cut the stream after N content chunks
    hang: bool = False  # never answer at all
    malformed_after_chunks: int | None = None  # garbage instead of event N+1 / the body
    stall_after_chunks: int | None = None  # silence forever after N content chunks
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    error_probability: float = 1.0  # share of requests error_status applies to
    fill_max_tokens: bool = False  # reply exactly as long as the request's token limit
    prefill_tokens_per_s: float = 0.0  # prompt words / this = extra TTFT; 0: off
    filler_chars: int = 0  # reply with this many filler characters; 0: off
    piece_chars: int = 4096  # ... in pieces of this many characters

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.tokens_per_s < 0:
            raise ValueError("ttft_s and tokens_per_s must be >= 0")
        if self.error_status is not None and not 400 <= self.error_status <= 599:
            raise ValueError(f"error_status must be an HTTP error status (400-599), "
                             f"not {self.error_status}")
        self._check_cut_points()
        self._check_headers()
        if not 0.0 <= self.error_probability <= 1.0:  # also rejects NaN
            raise ValueError(f"error_probability must be between 0 and 1, "
                             f"not {self.error_probability}")
        if self.error_probability != 1.0 and self.error_status is None:
            raise ValueError("error_probability needs error_status (the error it applies to)")
        if not self.prefill_tokens_per_s >= 0:
            raise ValueError("prefill_tokens_per_s must be >= 0 (0 = off)")
        if self.filler_chars < 0 or self.piece_chars < 1:
            raise ValueError("filler_chars must be >= 0 and piece_chars >= 1")

    def _check_cut_points(self) -> None:
        cuts = {"disconnect_after_chunks": self.disconnect_after_chunks,
                "malformed_after_chunks": self.malformed_after_chunks,
                "stall_after_chunks": self.stall_after_chunks}
        for name, value in cuts.items():
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        scripted = [name for name, value in cuts.items() if value is not None]
        if len(scripted) > 1:
            raise ValueError(f"set at most one of {', '.join(scripted)}: a stream "
                             "can only end one way")

    def _check_headers(self) -> None:
        if not isinstance(self.headers, dict):
            raise ValueError("headers must be an object of header name -> value")
        for name, value in self.headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise ValueError(f"headers: {name!r} is not a valid HTTP header name")
            if name.lower() in _FRAMING_HEADERS:
                raise ValueError(f"headers: {name} cannot be scripted (it would break the "
                                 "HTTP framing; use disconnect_after_chunks to cut a body)")
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise ValueError(f"headers: the value of {name} must be a one-line string")

    def rolls_error(self, rng: random.Random) -> bool:
        """Whether one request fails with ``error_status``; draws from ``rng``
        only when the outcome is really random, so p = 0 or 1 leave it alone."""
        p = self.error_probability
        if self.error_status is None or p <= 0.0:
            return False
        return p >= 1.0 or rng.random() < p

    @classmethod
    def from_settings(cls, settings: FakeProviderSettings) -> FakeBehavior:
        """Every behaviour field the provider settings declare (so a field added
        to the config flows through without touching this)."""
        declared = type(settings).model_fields
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)
                      if f.name in declared})

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


class FakeMalformed(Exception):
    """The behaviour says: send something that does not parse, here."""

    def __init__(self, after: int) -> None:
        super().__init__(f"scripted malformed response after {after} content chunk(s)")
        self.after = after


def split_words(text: str) -> list[str]:
    """``"Hello world"`` -> ``["Hello", " world"]``: joining gives the text back
    (minus trailing whitespace), and each piece counts as one token."""
    return _WORD.findall(text)


def filler_words(n: int) -> list[str]:
    """``n`` pieces of "lorem ipsum dolor ...", one token each (for ``fill_max_tokens``)."""
    return [w if i == 0 else " " + w
            for i, w in enumerate(itertools.islice(itertools.cycle(FILLER), n))]


def filler_pieces(total: int, piece: int) -> list[str]:
    """``total`` characters of filler as pieces of ``piece`` characters (the
    last may be shorter); the full pieces are one shared string."""
    text = (" ".join(FILLER) + " ") * (piece // 20 + 1)
    full = text[:piece]
    n, rest = divmod(total, piece)
    return [full] * n + ([text[:rest]] if rest else [])


def count_words(text: str) -> int:
    return len(text.split())


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of an OpenAI message ``content`` (string or parts; non-text parts skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # A part whose text is not a string (fuzzed input) adds nothing; it must
    # not fail the fake upstream (a 500 that opened the gateway's breaker).
    return " ".join(text for p in content if isinstance(p, dict) and p.get("type") == "text"
                    and isinstance(text := p.get("text"), str))


def last_user_text(request: ChatCompletionRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user":
            return content_text(m.content)
    return ""


def prompt_word_count(request: ChatCompletionRequest) -> int:
    return sum(count_words(content_text(m.content)) for m in request.messages)


TOOL_CALL_ID = "call_fake1"
TOOL_ARGUMENTS = '{"city": "Paris"}'
WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)  # mentioned: the tool is called


def fake_tool_name(request: ChatCompletionRequest) -> str | None:
    """The tool the fake calls, if any: the one ``tool_choice`` names; else the
    first tool when ``tool_choice`` is ``"required"`` or the last user message
    mentions the weather (as the fake Anthropic upstream does) and no tool result
    has answered it yet (so an agent's tool loop ends, as with a real model);
    else none."""
    tools, choice = request.tools, request.tool_choice
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        return str(name) if name else None
    if choice != "required" and (not WEATHER.search(last_user_text(request))
                                 or request.messages[-1].role == "tool"):
        return None
    first = tools[0].get("function")
    first = first if isinstance(first, dict) else tools[0]
    return str(first.get("name") or "tool")


def tool_call_delta(name: str) -> dict[str, Any]:
    """The whole fake tool call as one delta (arguments ``{"city": "Paris"}``)."""
    return {"tool_calls": [{"index": 0, "id": TOOL_CALL_ID, "type": "function",
                            "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]}


def fake_logprobs(words: Iterable[str], top: int) -> dict[str, Any]:
    """Deterministic log probabilities for fake tokens (one per word): the token
    itself, then ``top - 1`` less likely alternatives, as OpenAI lists them."""
    content = []
    for w in words:
        lp = -0.125 * (1 + len(w.strip()) % 7)
        alts = [{"token": w, "logprob": lp, "bytes": list(w.encode())}]
        alts += [{"token": f" alt{i}", "logprob": lp - i, "bytes": list(f" alt{i}".encode())}
                 for i in range(1, top)]
        content.append({"token": w, "logprob": lp, "bytes": list(w.encode()),
                        "top_logprobs": alts[:top]})
    return {"content": content, "refusal": None}


def input_texts(inputs: EmbeddingInputs) -> list[str]:
    """Embedding inputs as text: token ids joined as decimal words (the fake
    has no tokenizer; equal ids still embed equally)."""
    return [t if isinstance(t, str) else " ".join(map(str, t)) for t in inputs]


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


async def wait_forever() -> None:
    """Never return (until cancelled): a hang or a stall."""
    await asyncio.get_running_loop().create_future()


class FakeWords(AsyncIterator[str]):
    """The content pieces of one fake reply, paced by a :class:`FakeBehavior`.

    Two stages before output, both idempotent so an HTTP server can answer
    errors before sending headers and still delay the first byte after them:
    :meth:`begin` (hang, scripted error) and :meth:`ready` (``begin`` + TTFT,
    including the prefill time for ``prompt_tokens``). Iterating calls
    ``ready`` itself. After iteration, :attr:`finish_reason` is ``"stop"`` or
    ``"length"`` and :attr:`emitted` counts pieces given out. Whether a
    scripted error with ``error_probability`` < 1 strikes is drawn from
    ``rng`` once, at construction, so :attr:`fails` can be read up front.
    """

    def __init__(self, behavior: FakeBehavior, words: list[str],
                 finish_reason: str = "stop", stop_sequence: str | None = None, *,
                 prompt_tokens: int = 0, rng: random.Random | None = None) -> None:
        self.behavior = behavior
        self.words = words
        self.finish_reason = finish_reason
        self.stop_sequence = stop_sequence  # the stop sequence that cut the text, if any
        self.prompt_tokens = prompt_tokens
        self.fails = behavior.rolls_error(rng or _RNG)
        self.emitted = 0
        self._begun = False
        self._ready = False

    @classmethod
    def for_prompt(cls, behavior: FakeBehavior, prompt: str, limit: int | None = None,
                   stop: Iterable[str] = (), *, prompt_tokens: int = 0,
                   rng: random.Random | None = None) -> FakeWords:
        """The reply to ``prompt``: scripted text or an echo, cut at the first stop
        sequence and at ``limit`` words (one word = one token); or, with
        ``fill_max_tokens`` and a limit, exactly ``limit`` filler words."""
        extra: dict[str, Any] = {"prompt_tokens": prompt_tokens, "rng": rng}
        if behavior.filler_chars:
            return cls(behavior, filler_pieces(behavior.filler_chars, behavior.piece_chars),
                       "stop", None, **extra)
        if behavior.fill_max_tokens and limit is not None:
            return cls(behavior, filler_words(limit), "length", None, **extra)
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
        return cls(behavior, words, finish, hit, **extra)

    @property
    def ttft_s(self) -> float:
        """Scripted TTFT plus the prefill time the prompt would take."""
        b = self.behavior
        prefill = self.prompt_tokens / b.prefill_tokens_per_s if b.prefill_tokens_per_s else 0.0
        return b.ttft_s + prefill

    async def begin(self) -> None:
        """Hang forever or raise :class:`FakeFailure` if the behaviour says so."""
        if self._begun:
            return
        b = self.behavior
        if b.hang:
            await wait_forever()
        self._begun = True
        if self.fails:
            assert b.error_status is not None  # rolls_error is False without one
            raise FakeFailure(b.error_status, b.retry_after_s)

    async def ready(self) -> None:
        """:meth:`begin`, then wait out the time to first token."""
        await self.begin()
        if not self._ready:
            self._ready = True
            if (delay := self.ttft_s) > 0:
                await asyncio.sleep(delay)

    def __aiter__(self) -> FakeWords:
        return self

    async def __anext__(self) -> str:
        if not self._ready:
            await self.ready()
        await self._fault()
        if self.emitted >= len(self.words):
            raise StopAsyncIteration
        if self.emitted and self.behavior.tokens_per_s > 0:
            await asyncio.sleep(1.0 / self.behavior.tokens_per_s)
        word = self.words[self.emitted]
        self.emitted += 1
        return word

    async def _fault(self) -> None:
        """Play the scripted mid-stream fault once N words are out (checked
        before the end of the words, so N = len(words) still strikes)."""
        b, n = self.behavior, self.emitted
        if b.disconnect_after_chunks is not None and n >= b.disconnect_after_chunks:
            raise FakeDisconnect(n)
        if b.malformed_after_chunks is not None and n >= b.malformed_after_chunks:
            raise FakeMalformed(n)
        if b.stall_after_chunks is not None and n >= b.stall_after_chunks:
            await wait_forever()

    async def collect(self) -> str:
        """The whole reply at the pace of the stream (for non-streaming answers)."""
        return "".join([w async for w in self])


def fake_words(behavior: FakeBehavior, request: ChatCompletionRequest,
               rng: random.Random | None = None) -> FakeWords:
    """The reply to an OpenAI request: honours ``max_tokens`` / ``max_completion_tokens``
    (finish reason ``"length"`` when cut) and ``stop``."""
    return FakeWords.for_prompt(behavior, last_user_text(request), request.output_limit,
                                request.stop_list, prompt_tokens=prompt_word_count(request),
                                rng=rng)


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
    stream before the end, which must stop generation). ``seed`` (default: the
    settings' ``seed`` if they have one) seeds :attr:`rng`, which decides
    ``error_probability``; :meth:`reseed` restarts the sequence."""

    type = "fake"
    # Tools, ``n`` and logprobs are answered as the fake upstream server answers
    # them (:func:`fake_tool_name`, :func:`fake_logprobs`), so tests of their
    # passthrough behave the same in process and over HTTP.
    supports_tools = True
    supports_choices = True
    supports_logprobs = True

    def __init__(self, name: str, settings: FakeProviderSettings, *,
                 seed: int | None = None) -> None:
        super().__init__(name)
        self.settings = settings
        self.behavior = FakeBehavior.from_settings(settings)
        self.calls = 0
        self.active = 0
        self.completed = 0
        self.cancelled = 0
        self.failed = 0
        self.reseed(seed if seed is not None else getattr(settings, "seed", None))

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def status(self) -> ProviderStatus:
        return ProviderStatus(ready=True, extra={"calls": self.calls, "active": self.active})

    async def chat(self, call: ChatCall) -> AsyncGenerator[StreamItem, None]:
        request = call.request
        words = fake_words(self.behavior, request, self.rng)
        cid, created, model = completion_id(), int(time.time()), call.model
        self.calls += 1
        self.active += 1
        outcome = "cancelled"
        try:
            try:
                await words.ready()
            except FakeFailure as f:
                raise failure_error(self.name, f) from None
            n, tool = request.choices, fake_tool_name(request)
            top = (request.top_logprobs or 0) if request.logprobs else None
            yield _each(n, cid, model, created, {"role": "assistant", "content": ""})
            if tool is not None:
                yield _each(n, cid, model, created, tool_call_delta(tool))
                words.finish_reason, words.emitted = "tool_calls", len(split_words(
                    TOOL_ARGUMENTS))
            try:
                async for word in (words if tool is None else _no_words()):
                    lp = None if top is None else fake_logprobs((word,), top)
                    yield _each(n, cid, model, created, {"content": word}, logprobs=lp)
            except FakeDisconnect as d:
                raise UpstreamError(
                    f"fake provider {self.name!r}: scripted disconnect after {d.after} chunk(s)",
                    code="upstream_disconnected",
                ) from None
            except FakeMalformed as m:
                raise self._bad_response(m.after) from None
            yield _each(n, cid, model, created, finish_reason=words.finish_reason)
            outcome = "completed"
            yield usage_chunk(cid, model, created, prompt_word_count(request), words.emitted * n)
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

    def _bad_response(self, after: int | None) -> UpstreamError:
        where = f" after {after} chunk(s)" if after is not None else ""
        return UpstreamError(f"fake provider {self.name!r}: scripted malformed response{where}",
                             code="upstream_bad_response")

    async def embed(self, inputs: EmbeddingInputs, model: str,
                    connect_timeout_s: float | None = None) -> Embeddings:
        """One answer, no chunks: a scripted malformed response or stall applies
        whatever its N (after the TTFT, which includes the inputs' prefill)."""
        texts = input_texts(inputs)
        tokens = sum(count_words(t) for t in texts)
        words = FakeWords(self.behavior, [], prompt_tokens=tokens, rng=self.rng)
        try:
            await words.ready()
        except FakeFailure as f:
            raise failure_error(self.name, f) from None
        if self.behavior.malformed_after_chunks is not None:
            raise self._bad_response(None)
        if self.behavior.stall_after_chunks is not None:
            await wait_forever()
        return Embeddings(vectors=[fake_vector(t) for t in texts], prompt_tokens=tokens)


def _each(n: int, cid: str, model: str, created: int, delta: dict[str, Any] | None = None,
          finish_reason: str | None = None, logprobs: dict[str, Any] | None = None
          ) -> StreamItem:
    """The same chunk for each of ``n`` choices (a batch when n > 1)."""
    if n == 1:
        return make_chunk(cid, model, created, delta, finish_reason, logprobs=logprobs)
    return [make_chunk(cid, model, created, delta, finish_reason, index=i, logprobs=logprobs)
            for i in range(n)]


async def _no_words() -> AsyncIterator[str]:
    return
    yield  # an async generator that yields nothing
