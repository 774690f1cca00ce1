"""The Anthropic Messages API, inbound: its wire types, and their translation
into the gateway's internal chat-completions request.

A ``POST /v1/messages`` is validated here (msgspec, with limits), then
rewritten as the OpenAI-format request every stage and provider already
takes, so it runs through the same pipeline as ``/v1/chat/completions``
(and reaches any model: OpenAI-format, anthropic, local, fake). The answer,
an OpenAI chunk stream, is turned back into a Message or Anthropic events
by :mod:`seawall.api.anthropic_stream`. The outbound direction (OpenAI in,
Anthropic upstream) is :mod:`seawall.providers.anthropic`.

Translation rules (docs/anthropic.md):

* ``system`` (string or text blocks) becomes one system message.
* ``tool_result`` blocks become ``tool`` messages, placed before the rest of
  their user turn; ``tool_use`` blocks become the assistant's ``tool_calls``.
* ``image`` blocks become ``image_url`` parts (base64 as a data URL); images
  inside a ``tool_result`` go in a user message right after the tool
  messages (OpenAI-format tool messages carry text only).
* ``thinking`` (the option) and ``thinking`` / ``redacted_thinking`` blocks
  in the history are dropped: the internal request is OpenAI-format, which
  has no signed reasoning to send back, and answers carry no thinking blocks.
* ``output_config.format`` (structured outputs, a JSON schema) becomes
  ``response_format`` ``json_schema``; ``output_config.effort`` is dropped.
* ``top_k`` and ``cache_control`` are dropped (no OpenAI equivalent);
  ``metadata.user_id`` becomes ``user``; ``tool_choice`` maps auto/any/tool/none
  to auto/required/function/none and ``disable_parallel_tool_use`` to
  ``parallel_tool_calls: false``.
* Anthropic server tools (web search, code execution, ...) and ``document``
  blocks have no OpenAI form: a 400 says so.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from msgspec import Meta, Struct

from seawall.api.wire import MAX_MODEL_NAME, ModelName, UserId
from seawall.errors import InvalidRequest, SeawallError

MAX_MESSAGES = 10_000  # Claude Code sessions reach hundreds; a body cap bounds bytes
MAX_BLOCKS = 1_000  # content blocks in one message (or one tool result)
MAX_TOOLS = 1_000
MAX_STOP_SEQUENCES = 4  # the internal (OpenAI-format) request allows 4
MAX_TEXT_FIELD = 256  # ids, names, user ids

Short = Annotated[str, Meta(max_length=MAX_TEXT_FIELD)]


class TextBlock(Struct, tag="text", omit_defaults=True):
    text: str


class ImageSource(Struct, omit_defaults=True):
    type: Literal["base64", "url"]
    media_type: Short | None = None
    data: str | None = None
    url: str | None = None


class ImageBlock(Struct, tag="image", omit_defaults=True):
    source: ImageSource


class ToolUseBlock(Struct, tag="tool_use", omit_defaults=True):
    id: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_FIELD)]
    name: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_FIELD)]
    input: dict[str, Any] = {}


class ToolResultBlock(Struct, tag="tool_result", omit_defaults=True):
    tool_use_id: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_FIELD)]
    content: str | Annotated[list[TextBlock | ImageBlock],
                             Meta(max_length=MAX_BLOCKS)] | None = None
    is_error: bool = False


class ThinkingBlock(Struct, tag="thinking", omit_defaults=True):
    thinking: str = ""
    signature: str = ""


class RedactedThinkingBlock(Struct, tag="redacted_thinking", omit_defaults=True):
    data: str = ""


class DocumentBlock(Struct, tag="document", omit_defaults=True):
    source: dict[str, Any] | None = None


Block = (TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
         | RedactedThinkingBlock | DocumentBlock)


class InMessage(Struct, omit_defaults=True):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Meta(max_length=MAX_BLOCKS)]


class Tool(Struct, omit_defaults=True):
    name: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_FIELD)]
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: Short | None = None  # "custom" or absent; anything else is a server tool


class ToolChoice(Struct, omit_defaults=True):
    type: Literal["auto", "any", "tool", "none"]
    name: Short | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(Struct, omit_defaults=True):
    user_id: UserId | None = None


class OutputFormat(Struct, omit_defaults=True):
    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(Struct, omit_defaults=True):
    format: OutputFormat | None = None  # structured outputs -> response_format
    effort: Short | None = None  # dropped


class MessagesRequest(Struct, omit_defaults=True):
    """``POST /v1/messages``. Unknown fields (``service_tier``, ``container``,
    ``anthropic-beta`` features) are ignored."""

    model: ModelName
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[InMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    system: str | Annotated[list[TextBlock], Meta(max_length=MAX_BLOCKS)] | None = None
    stream: bool = False
    stop_sequences: Annotated[list[str], Meta(max_length=MAX_STOP_SEQUENCES)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None  # dropped
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: dict[str, Any] | None = None  # dropped
    output_config: OutputConfig | None = None


class CountTokensRequest(Struct, omit_defaults=True):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: ModelName
    messages: Annotated[list[InMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    system: str | Annotated[list[TextBlock], Meta(max_length=MAX_BLOCKS)] | None = None
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None


# -- request: Anthropic -> the internal (OpenAI-format) request -----------------

# The gateway's own options, sent with the Anthropic SDK as ``extra_body``.
GATEWAY_OPTIONS = ("seawall", "rag", "prompt")
TOOL_CHOICE_TO_OPENAI = {"auto": "auto", "any": "required", "none": "none"}


def _image_part(block: ImageBlock, param: str) -> dict[str, Any]:
    src = block.source
    if src.type == "url":
        if not src.url:
            raise InvalidRequest("an image with source type 'url' needs source.url",
                                 param=f"{param}.source.url")
        url = src.url
    else:
        if not src.data or not src.media_type:
            raise InvalidRequest("a base64 image needs source.media_type and source.data",
                                 param=f"{param}.source")
        url = f"data:{src.media_type};base64,{src.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _unsupported(kind: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"content block type {kind!r} cannot be sent through this gateway "
                          "(it has no OpenAI-format equivalent); send its text instead",
                          param=param, code="unsupported_content")


def _tool_result(block: ToolResultBlock, param: str) -> tuple[str, list[dict[str, Any]]]:
    """(text for the tool message, image parts). OpenAI-format tool messages
    carry text only, so images a tool returned (Claude Code reading a
    screenshot) travel in the user message that follows."""
    images: list[dict[str, Any]] = []
    if block.content is None or isinstance(block.content, str):
        text = block.content or ""
    else:
        parts = []
        for k, b in enumerate(block.content):
            if isinstance(b, ImageBlock):
                images.append(_image_part(b, f"{param}.content[{k}]"))
            else:
                parts.append(b.text)
        if images:
            parts.append(f"[{len(images)} image(s): in the next user message]")
        text = "\n".join(parts)
    return (f"Error: {text}" if block.is_error else text), images


def _user_turn(m: InMessage, param: str) -> list[dict[str, Any]]:
    """tool messages first (they answer the assistant's tool calls), then the user's own."""
    if isinstance(m.content, str):
        return [{"role": "user", "content": m.content}]
    tools: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(m.content):
        where = f"{param}.content[{j}]"
        if isinstance(b, TextBlock):
            parts.append({"type": "text", "text": b.text})
        elif isinstance(b, ImageBlock):
            parts.append(_image_part(b, where))
        elif isinstance(b, ToolResultBlock):
            text, images = _tool_result(b, where)
            tools.append({"role": "tool", "tool_call_id": b.tool_use_id, "content": text})
            tool_images += images
        elif isinstance(b, DocumentBlock):
            raise _unsupported("document", f"{where}.type")
        elif isinstance(b, ToolUseBlock):
            raise InvalidRequest("tool_use blocks belong in assistant turns",
                                 param=f"{where}.type")
        # thinking blocks: dropped
    parts = tool_images + parts
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        content: Any = parts[0]["text"] if only_text and len(parts) == 1 else parts
        tools.append({"role": "user", "content": content})
    return tools


def _assistant_turn(m: InMessage, param: str) -> dict[str, Any] | None:
    if isinstance(m.content, str):
        return {"role": "assistant", "content": m.content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(m.content):
        if isinstance(b, TextBlock):
            texts.append(b.text)
        elif isinstance(b, ToolUseBlock):
            calls.append({"id": b.id, "type": "function",
                          "function": {"name": b.name,
                                       "arguments": orjson.dumps(b.input).decode()}})
        elif isinstance(b, ThinkingBlock | RedactedThinkingBlock):
            continue  # dropped: see the module docstring
        else:
            raise InvalidRequest(f"content block type {_tag(b)!r} is not allowed in an "
                                 "assistant turn", param=f"{param}.content[{j}].type")
    if not texts and not calls:
        return None  # only thinking: nothing left to send
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _tag(b: Any) -> str:
    return str(type(b).__struct_config__.tag)


def system_text(system: str | list[TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n\n".join(b.text for b in system if b.text)


def chat_messages(req: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    """The OpenAI ``messages`` for an Anthropic request."""
    out: list[dict[str, Any]] = []
    if system := system_text(req.system):
        out.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        param = f"messages[{i}]"
        if m.role == "user":
            out.extend(_user_turn(m, param))
        elif (turn := _assistant_turn(m, param)) is not None:
            out.append(turn)
    if len(out) == (1 if system else 0):
        raise InvalidRequest("the messages carry no content the model can read",
                             param="messages")
    return out


def chat_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        if t.type not in (None, "custom"):
            raise InvalidRequest(f"tool type {t.type!r} is an Anthropic server tool; this "
                                 "gateway serves client tools (name, description, "
                                 "input_schema) only", param=f"tools[{i}].type",
                                 code="unsupported_tool")
        fn: dict[str, Any] = {"name": t.name, "parameters": t.input_schema
                              or {"type": "object", "properties": {}}}
        if t.description:
            fn["description"] = t.description
        out.append({"type": "function", "function": fn})
    return out


def chat_request(req: MessagesRequest, raw: dict[str, Any]) -> dict[str, Any]:
    """The internal chat-completions body (a plain dict, as a client would send
    it) for a validated Messages request; ``raw`` is its JSON, for the gateway
    options it may carry."""
    body: dict[str, Any] = {"model": req.model, "messages": chat_messages(req),
                            "max_tokens": req.max_tokens, "stream": req.stream}
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    if req.stop_sequences:
        body["stop"] = list(req.stop_sequences)
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.metadata is not None and req.metadata.user_id:
        body["user"] = req.metadata.user_id
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": fmt.schema}}
    choice = req.tool_choice
    if req.tools:
        body["tools"] = chat_tools(req.tools)
        if choice is not None:
            if choice.type == "tool":
                if not choice.name:
                    raise InvalidRequest('tool_choice {"type": "tool"} needs a name',
                                         param="tool_choice.name")
                body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            else:
                body["tool_choice"] = TOOL_CHOICE_TO_OPENAI[choice.type]
            if choice.disable_parallel_tool_use and choice.type != "none":
                body["parallel_tool_calls"] = False
    elif choice is not None and choice.type in ("any", "tool"):
        raise InvalidRequest(f"tool_choice {choice.type!r} needs tools", param="tool_choice")
    for key in GATEWAY_OPTIONS:
        if key in raw:
            body[key] = raw[key]
    return body


def model_of(raw: dict[str, Any]) -> str:
    """The model asked for, as recorded even when validation refuses it."""
    model = raw.get("model")
    return model[:MAX_MODEL_NAME] if isinstance(model, str) else ""


# -- errors: Anthropic's shape --------------------------------------------------

OVERLOADED_STATUS = 529
_TYPES_BY_STATUS = {
    401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
    OVERLOADED_STATUS: "overloaded_error",
}


def error_status(err: SeawallError) -> int:
    """The status to answer with: the gateway's own, except that admission
    refusing work (``gateway_overloaded``) is Anthropic's 529 ``overloaded``."""
    return OVERLOADED_STATUS if err.code == "gateway_overloaded" else err.status


def error_type(err: SeawallError) -> str:
    status = error_status(err)
    if status in _TYPES_BY_STATUS:
        return _TYPES_BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(err: SeawallError) -> bytes:
    """``{"type": "error", "error": {"type": ..., "message": ...}}``; the gateway's
    stable code rides along as ``error.code`` (Anthropic's SDK ignores it)."""
    return orjson.dumps({"type": "error", "error": {
        "type": error_type(err), "message": err.message, "code": err.code}})
