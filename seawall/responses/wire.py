"""The Responses API request, and its translation into the gateway's internal
chat-completions request (as :mod:`seawall.api.anthropic_wire` does for the
Messages API), so a response runs through the same pipeline as
``/v1/chat/completions``.

Translation rules (docs/responses.md):

* ``instructions`` becomes the first message (``system``); the instructions
  of earlier turns are not carried over, as OpenAI does.
* ``input`` (a string, or items): ``message`` items keep their role; their
  ``input_text`` / ``output_text`` / ``refusal`` parts become text parts and
  ``input_image`` parts ``image_url`` parts. ``function_call`` items become
  the assistant's ``tool_calls`` (consecutive ones share one assistant
  message), ``function_call_output`` items ``tool`` messages. ``reasoning``
  items are dropped (the chat format cannot carry them back).
* ``tools``: function tools only (the hosted tools, web search, file search,
  ... are OpenAI's servers' and a 400 says so); ``tool_choice`` likewise.
* ``max_output_tokens`` -> ``max_completion_tokens``; ``text.format``
  -> ``response_format``; ``temperature``, ``top_p``, ``user``,
  ``parallel_tool_calls`` pass as they are.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from seawall.api.wire import ModelName, RagOptions, SeawallOptions, UserId
from seawall.errors import InvalidRequest
from seawall.prompts.wire import PromptRef

MAX_ID = 128  # response, item and call ids
MAX_METADATA_KEYS = 16  # OpenAI's limits on metadata
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_TOOLS = 1_000
MAX_PARTS = 1_000  # content parts in one message item

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID)]


class ResponsesRequest(Struct, omit_defaults=True):
    model: ModelName
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: Id | None = None
    tools: Annotated[list[dict[str, Any]], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    metadata: dict[str, str] | None = None
    user: UserId | None = None
    store: bool = True
    stream: bool = False
    background: bool = False
    text: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    conversation: Any = None
    # The gateway's own options (extra_body), as on /v1/chat/completions.
    seawall: SeawallOptions | None = None
    rag: RagOptions | None = None
    prompt: PromptRef | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def check(req: ResponsesRequest, max_items: int) -> None:
    """What msgspec's types cannot say: a 400 naming the field."""
    if req.background and not req.store:
        raise InvalidRequest("background=true requires store=true (the response is read "
                             "back with responses.retrieve).", param="background",
                             code="invalid_value")
    if req.conversation is not None:
        raise InvalidRequest("`conversation` (the Conversations API) is not supported; "
                             "continue a conversation with previous_response_id.",
                             param="conversation", code="unsupported_parameter")
    if req.input is None or req.input == [] or req.input == "":
        raise InvalidRequest("`input` is required: a string or a list of input items.",
                             param="input", code="missing_required_parameter")
    if isinstance(req.input, list) and len(req.input) > max_items:
        raise InvalidRequest(f"`input` has {len(req.input)} items; at most {max_items} are "
                             "allowed (responses.max_input_items).", param="input",
                             code="too_many_items")
    md = req.metadata or {}
    if len(md) > MAX_METADATA_KEYS or any(len(k) > MAX_METADATA_KEY
                                          or len(v) > MAX_METADATA_VALUE
                                          for k, v in md.items()):
        raise InvalidRequest(f"`metadata`: at most {MAX_METADATA_KEYS} pairs, keys up to "
                             f"{MAX_METADATA_KEY} and values up to {MAX_METADATA_VALUE} "
                             "characters.", param="metadata", code="invalid_value")


# -- input items -> stored items (with ids) ---------------------------------------------

def input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as validated items, each with an id (as OpenAI
    lists them under ``input_items``)."""
    raw = req.input
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": raw}]
    assert raw is not None
    return [_item(it, f"input[{i}]") for i, it in enumerate(raw)]


def _bad(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"`{param}`: {what}", param=param, code="invalid_value")


def _str(d: dict[str, Any], key: str, param: str, limit: int | None = None) -> str:
    v = d.get(key)
    if not isinstance(v, str) or (limit is not None and not 0 < len(v) <= limit):
        raise _bad(f"{param}.{key}", "a string is required" + (
            f" (1 to {limit} characters)" if limit else ""))
    return v


def _item(it: Any, param: str) -> dict[str, Any]:
    if not isinstance(it, dict):
        raise _bad(param, "each input item must be an object")
    kind = it.get("type", "message")
    if kind == "message":
        role = it.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise _bad(f"{param}.role", "one of user, system, developer, assistant")
        return {"type": "message", "id": it.get("id") or new_id("msg"), "role": role,
                "status": "completed", "content": _parts(it.get("content"), role, param)}
    if kind == "function_call":
        return {"type": "function_call", "id": it.get("id") or new_id("fc"),
                "call_id": _str(it, "call_id", param, MAX_ID),
                "name": _str(it, "name", param, MAX_ID),
                "arguments": _str(it, "arguments", param), "status": "completed"}
    if kind == "function_call_output":
        out = it.get("output")
        if isinstance(out, list):
            out = "".join(p.get("text", "") for p in out if isinstance(p, dict))
        if not isinstance(out, str):
            raise _bad(f"{param}.output", "a string (or a list of text parts) is required")
        return {"type": "function_call_output", "id": it.get("id") or new_id("fco"),
                "call_id": _str(it, "call_id", param, MAX_ID), "output": out,
                "status": "completed"}
    if kind == "reasoning":
        return {"type": "reasoning", "id": it.get("id") or new_id("rs"), "summary": []}
    raise InvalidRequest(f"`{param}.type`: input items of type {str(kind)[:64]!r} are not "
                         "supported (message, function_call, function_call_output).",
                         param=f"{param}.type", code="unsupported_value")


def _parts(content: Any, role: str, param: str) -> list[dict[str, Any]]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return [{"type": text_type, "text": content}]
    if not isinstance(content, list) or len(content) > MAX_PARTS:
        raise _bad(f"{param}.content", f"a string or a list of up to {MAX_PARTS} parts")
    parts = []
    for j, p in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": text_type, "text": _str(p, "text", where)})
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": _str(p, "refusal", where)})
        elif kind == "input_image":
            url = p.get("image_url")
            if not isinstance(url, str):
                raise _bad(f"{where}.image_url", "an image URL or data URL is required "
                           "(file_id images are not supported)")
            parts.append({"type": "input_image", "image_url": url,
                          "detail": p.get("detail", "auto")})
        else:
            raise InvalidRequest(f"`{where}.type`: content parts of type {str(kind)[:64]!r} "
                                 "are not supported (input_text, output_text, input_image, "
                                 "refusal).", param=f"{where}.type", code="unsupported_value")
    return parts


# -- items -> chat messages --------------------------------------------------------------

def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored items (input or output) as chat messages."""
    out: list[dict[str, Any]] = []
    for it in items:
        kind = it["type"]
        if kind == "message":
            out.append({"role": it["role"], "content": _chat_content(it["content"])})
        elif kind == "function_call":
            call = {"id": it["call_id"], "type": "function",
                    "function": {"name": it["name"], "arguments": it["arguments"]}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": it["call_id"], "content": it["output"]})
    return out


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    texts = [p.get("text") or p.get("refusal") or "" for p in parts if p["type"] != "input_image"]
    if all(p["type"] != "input_image" for p in parts):
        return "".join(texts)
    return [{"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}}
            if p["type"] == "input_image" else {"type": "text", "text": p.get("text", "")}
            for p in parts]


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else None
            raise InvalidRequest(f"`tools[{i}]`: tool type {str(kind)[:64]!r} is a hosted "
                                 "OpenAI tool; this gateway serves function tools only.",
                                 param=f"tools[{i}].type", code="unsupported_value")
        fn = {"name": _str(t, "name", f"tools[{i}]", MAX_ID)}
        for key in ("description", "parameters", "strict"):
            if t.get(key) is not None:
                fn[key] = t[key]
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        if choice not in (None, "auto", "none", "required"):
            raise _bad("tool_choice", "auto, none, required or a function")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice", 'only {"type": "function", "name": ...} is supported')


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("text.format.type", "text, json_object or json_schema")


def chat_request(req: ResponsesRequest, raw: dict[str, Any],
                 messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The internal chat-completions body for ``messages`` (the rebuilt
    conversation, instructions first)."""
    chat: dict[str, Any] = {"model": req.model, "messages": messages, "stream": req.stream}
    if req.stream:
        chat["stream_options"] = {"include_usage": True}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("user", "user"),
                     ("max_output_tokens", "max_completion_tokens"),
                     ("parallel_tool_calls", "parallel_tool_calls")):
        if getattr(req, src) is not None:
            chat[dst] = getattr(req, src)
    if (tools := chat_tools(req.tools)) is not None:
        chat["tools"] = tools
    if (choice := chat_tool_choice(req.tool_choice)) is not None:
        chat["tool_choice"] = choice
    if (fmt := response_format(req.text)) is not None:
        chat["response_format"] = fmt
    for key in ("seawall", "rag", "prompt"):  # validated by the chat request's types
        if key in raw:
            chat[key] = raw[key]
    return chat
