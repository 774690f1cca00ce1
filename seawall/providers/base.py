"""The model abstraction: one interface whose native output is a stream of chunks.

A chunk is an OpenAI ``chat.completion.chunk`` dict: the lingua franca every
backend translates into. A non-streaming request takes the same path and the
chunks are gathered at the end (:func:`gather`), so the two can never drift.
A final chunk with ``choices: []`` and a ``usage`` block carries token counts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from seawall.api.wire import ChatCompletionRequest, EmbeddingInputs
from seawall.errors import InvalidRequest
from seawall.providers.upstream import RateLimitInfo, ResponseLimits

Chunk = dict[str, Any]
# A provider may yield several chunks that arrived in one network read as a
# list: they are relayed to the client in one write (one syscall, not ten),
# which is most of the cost of relaying a fast stream.
ChunkBatch = list[Chunk]  # test with isinstance(item, list): a batch may be a RawBatch
StreamItem = Chunk | ChunkBatch


class RawBatch(list[Chunk]):
    """A batch from an SSE upstream that also keeps the events as they came
    (``sse``, ``data: {...}\\n\\n`` each), so the answer can forward those
    bytes instead of encoding every chunk again. The chunks of a RawBatch are
    never changed in place (nothing does: a stage that changes a chunk makes
    a copy, and a plain list of copies is encoded afresh)."""

    __slots__ = ("sse",)

    def __init__(self, chunks: list[Chunk], sse: bytes) -> None:
        super().__init__(chunks)
        self.sse = sse
# What one log-probability entry counts toward an answer's size cap: about its
# JSON size ({"token", "logprob", "bytes"}), so logprobs cannot grow unbounded.
_LOGPROB_CHARS = 64


@dataclass(slots=True)
class ChatCall:
    """What a provider is asked to do: the validated request, its raw JSON
    (unknown fields pass through to OpenAI-compatible upstreams), and the
    upstream's own model name."""

    request: ChatCompletionRequest
    raw: dict[str, Any]
    model: str
    stream: bool
    connect_timeout_s: float | None = None  # None: the provider's own default
    # Set by HTTP providers from the upstream's rate-limit headers, for the router.
    rate_limits: RateLimitInfo | None = None


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` from an upstream (an error message) with the credentials we
    sent it replaced by ``***``: some upstreams and proxies echo the key they
    were given ("Incorrect API key provided: sk-..."), and the message goes on
    to the client, the trace record and the log."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def secrets_of(api_key: str | None, headers: dict[str, str] | None = None) -> tuple[str, ...]:
    """The values to :func:`redact`: the API key and any configured header
    value long enough to be a credential (8+ characters)."""
    values = [api_key or "", *(headers or {}).values()]
    return tuple(v for v in values if len(v) >= 8)


@dataclass(slots=True)
class ProviderStatus:
    ready: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Provider:
    """Base class. ``__init__`` only checks configuration; heavy work (loading
    a model, opening a pool) happens in :meth:`start`."""

    type: str = "abstract"
    supports_tools: bool = False
    supports_choices: bool = False  # ``n`` > 1
    supports_logprobs: bool = False
    # Set by the registry from the server settings; HTTP backends enforce them.
    limits: ResponseLimits = ResponseLimits()

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        """Load models / open connection pools. Called once at server start."""

    async def close(self) -> None:
        """Release everything :meth:`start` acquired."""

    def status(self) -> ProviderStatus:
        return ProviderStatus(ready=True)

    def refuse_unsupported(self, call: ChatCall) -> None:
        """A 400 that names what this provider cannot do, rather than an answer
        that silently lacks it (``tools``, ``n`` > 1, ``logprobs``)."""
        request, where = call.request, f"The model {call.model!r} ({self.type} provider " \
                                        f"{self.name!r})"
        if not self.supports_tools and request.tools and request.tool_choice != "none":
            raise InvalidRequest(f"{where} cannot call tools; remove `tools` or use a model "
                                 "whose provider supports them.",
                                 param="tools", code="tools_not_supported")
        if not self.supports_choices and request.choices > 1:
            raise InvalidRequest(f"{where} answers one choice per request; send `n` = 1 (or "
                                 "several requests), or use an OpenAI-compatible model.",
                                 param="n", code="n_not_supported")
        if not self.supports_logprobs and (request.logprobs or request.top_logprobs):
            raise InvalidRequest(f"{where} does not return log probabilities; remove "
                                 "`logprobs` / `top_logprobs` or use an OpenAI-compatible "
                                 "model.", param="logprobs", code="logprobs_not_supported")

    def chat(self, call: ChatCall) -> AsyncGenerator[StreamItem, None]:
        """Stream chunks (or batches of chunks) for ``call``. Raise
        :class:`~seawall.errors.SeawallError` subclasses for failures;
        closing the iterator must stop generation."""
        raise NotImplementedError(f"provider {self.name!r} ({self.type}) has no chat models")

    async def embed(self, inputs: EmbeddingInputs, model: str,
                    connect_timeout_s: float | None = None) -> Embeddings:
        """Embed ``inputs``; HTTP backends bound their connect by ``connect_timeout_s``."""
        raise NotImplementedError(f"provider {self.name!r} ({self.type}) has no embedding models")


def has_content(item: StreamItem) -> bool:
    """Does this chunk (or batch) carry output a client would see? (The first
    that does marks the time to first token, and the point after which a
    failed stream can no longer be retried invisibly.)"""
    if isinstance(item, list):
        return any(has_content(c) for c in item)
    for c in item.get("choices") or ():
        d = c.get("delta")
        if d and (d.get("content") or d.get("tool_calls") or d.get("refusal")):
            return True
        if c.get("finish_reason"):
            return True  # an empty but complete answer is an answer
    return False


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def make_chunk(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
) -> Chunk:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta or {}, "logprobs": logprobs,
                     "finish_reason": finish_reason}],
    }


def usage_chunk(cid: str, model: str, created: int, prompt: int, completion: int) -> Chunk:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


def completion_to_chunk(completion: dict[str, Any]) -> Chunk:
    """A whole ``chat.completion`` as one chunk (its message as the delta)."""
    choices = []
    for c in completion.get("choices") or []:
        choices.append({"index": c.get("index", 0), "delta": c.get("message") or {},
                        "logprobs": c.get("logprobs"), "finish_reason": c.get("finish_reason")})
    out = {"id": completion.get("id") or completion_id(), "object": "chat.completion.chunk",
           "created": completion.get("created") or int(time.time()),
           "model": completion.get("model", ""), "choices": choices}
    if completion.get("usage"):
        out["usage"] = completion["usage"]
    if completion.get("system_fingerprint"):
        out["system_fingerprint"] = completion["system_fingerprint"]
    return out


class Gatherer:
    """Folds a chunk stream into one ``chat.completion`` (text, tool calls, usage).

    Text arrives in many small deltas: each is appended to a list and joined
    once, when read (joining on every delta made a long answer quadratic).
    ``size`` counts the characters gathered so far (text, refusal and tool
    arguments), for the cap on answer size.
    """

    __slots__ = ("id", "created", "model", "fingerprint", "_choices", "usage", "size")

    def __init__(self) -> None:
        self.id: str | None = None
        self.created: int | None = None
        self.model = ""
        self.fingerprint: str | None = None
        self._choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.size = 0

    def add_item(self, item: StreamItem) -> None:
        if isinstance(item, list):
            for chunk in item:
                self.add(chunk)
        else:
            self.add(item)

    def add(self, chunk: Chunk) -> None:
        if self.id is None:
            self.id = chunk.get("id")
            self.created = chunk.get("created")
            self.model = chunk.get("model", "")
        if chunk.get("system_fingerprint"):
            self.fingerprint = chunk["system_fingerprint"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            slot = self._choices.get(c.get("index", 0))
            if slot is None:
                slot = self._choices[c.get("index", 0)] = {
                    "role": "assistant", "content": None, "tool_calls": {}, "finish": None,
                    "refusal": None, "logprobs": None}
            if lp := c.get("logprobs"):
                self._add_logprobs(slot, lp)
            delta = c.get("delta") or {}
            text = delta.get("content")
            if text:
                _append(slot, "content", text)
                self.size += len(text)
            if delta.get("refusal"):
                _append(slot, "refusal", delta["refusal"])
                self.size += len(delta["refusal"])
            for tc in delta.get("tool_calls") or ():
                acc = slot["tool_calls"].setdefault(
                    tc.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": [], "arguments": []}},
                )
                if tc.get("id"):
                    acc["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    acc["function"]["name"].append(fn["name"])
                    self.size += len(fn["name"])
                if fn.get("arguments"):
                    acc["function"]["arguments"].append(fn["arguments"])
                    self.size += len(fn["arguments"])
            if c.get("finish_reason"):
                slot["finish"] = c["finish_reason"]

    def _add_logprobs(self, slot: dict[str, Any], lp: Any) -> None:
        """Log probabilities arrive per chunk (``{"content": [...], "refusal": [...]}``);
        a whole answer's come in one piece. Each entry counts toward ``size``."""
        if not isinstance(lp, dict):
            return
        acc = slot["logprobs"]
        for part in ("content", "refusal"):
            entries = lp.get(part)
            if not isinstance(entries, list) or not entries:
                continue
            if acc is None:
                acc = slot["logprobs"] = {"content": None, "refusal": None}
            if acc[part] is None:
                acc[part] = []
            acc[part].extend(entries)
            for e in entries:
                top = e.get("top_logprobs") if isinstance(e, dict) else None
                self.size += _LOGPROB_CHARS * (1 + (len(top) if isinstance(top, list) else 0))

    @property
    def text(self) -> str:
        slot = self._choices.get(0)
        return _joined(slot, "content") or "" if slot else ""

    @property
    def finish_reason(self) -> str | None:
        slot = self._choices.get(0)
        return slot["finish"] if slot else None

    def other_choices(self) -> list[tuple[int, str, str | None]]:
        """(index, text, finish reason) of every choice after the first
        (``n`` > 1; at most ``n`` of them, which the request limits)."""
        return [(i, _joined(self._choices[i], "content") or "", self._choices[i]["finish"])
                for i in sorted(self._choices) if i != 0]

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            slot = self._choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": _joined(slot, "content"),
                                       "refusal": _joined(slot, "refusal")}
            if slot["tool_calls"]:
                message["tool_calls"] = [_tool_call(slot["tool_calls"][i])
                                         for i in sorted(slot["tool_calls"])]
            choices.append({"index": index, "message": message, "logprobs": slot["logprobs"],
                            "finish_reason": slot["finish"] or "stop"})
        out: dict[str, Any] = {
            "id": self.id or completion_id(),
            "object": "chat.completion",
            "created": self.created or int(time.time()),
            "model": self.model,
            "choices": choices,
        }
        if self.fingerprint:
            out["system_fingerprint"] = self.fingerprint
        if self.usage:
            out["usage"] = self.usage
        return out


def _append(slot: dict[str, Any], field: str, piece: str) -> None:
    parts = slot[field]
    if parts is None:
        slot[field] = [piece]
    else:
        parts.append(piece)


def _joined(slot: dict[str, Any], field: str) -> str | None:
    """The field's pieces as one string, joined once and kept joined."""
    parts = slot[field]
    if parts is None:
        return None
    if len(parts) > 1:
        parts[:] = ["".join(parts)]
    return parts[0]


def _tool_call(acc: dict[str, Any]) -> dict[str, Any]:
    fn = acc["function"]
    return {"id": acc["id"], "type": acc["type"],
            "function": {"name": "".join(fn["name"]), "arguments": "".join(fn["arguments"])}}
