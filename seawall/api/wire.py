"""The OpenAI wire format, validated with msgspec.

msgspec decodes and type-checks a request in one pass in a few microseconds,
which matters on the hot path; its messages name the JSON path of a bad field
(``Expected `int`, got `str` - at `$.max_tokens```). Unknown fields are kept in
the raw dict and passed through to OpenAI-compatible upstreams untouched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from seawall.api.limits import (
    DEFAULT_MAX_DEPTH,
    depth_exceeds,
    has_wide_int,
    may_exceed,
    too_deep,
)
from seawall.errors import InvalidRequest
from seawall.prompts.wire import PromptRef

T = TypeVar("T")
MAX_MODEL_NAME = 256  # real names (fine-tunes, "org/model" ids) are well under 100
MAX_CHOICES = 8  # ``n``: OpenAI allows 128; 8 bounds one request's work and answer size
MAX_TOP_LOGPROBS = 20  # OpenAI's own bound
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's bound on the inputs of one request
MAX_INPUT_TOKEN_IDS = 8192  # one input given as token ids (OpenAI's embedding context)
MAX_DIMENSIONS = 16_384  # ``dimensions``: the largest embedding models give 4,096
# ``user`` (``metadata.user_id`` on /v1/messages): a stable id of the caller's end
# user. OpenAI documents no bound for ``user`` (64 for its successor
# ``safety_identifier``); Anthropic documents 256 for ``user_id``. Ours is 256 on
# every API: room for hashed ids and Claude Code's composite user ids.
MAX_USER = 256
ModelName = Annotated[str, Meta(min_length=1, max_length=MAX_MODEL_NAME)]
UserId = Annotated[str, Meta(max_length=MAX_USER)]
USER_PARAMS = frozenset({"user", "metadata.user_id"})
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(Struct, omit_defaults=True):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(Struct, omit_defaults=True):
    include_usage: bool = False


class CacheControl(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Per-request cache controls, as HTTP's Cache-Control directives."""

    no_cache: bool = False  # do not answer from the cache (the answer is still stored)
    no_store: bool = False  # neither answer from nor store into the cache
    max_age: Annotated[float, Meta(ge=0)] | None = None  # only entries younger than this


class SeawallOptions(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """The gateway's own request options, sent as ``extra_body={"seawall": {...}}``.
    Removed from the request before it goes upstream."""

    cache: CacheControl | bool | None = None  # false = no_store
    prompt_version: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    # The correct answer, for a judge's correctness rubric (docs/quality.md).
    reference: Annotated[str, Meta(max_length=100_000)] | None = None


class RagOptions(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Ground the answer in a collection: ``extra_body={"rag": {...}}``.
    Removed from the request before it goes upstream (docs/rag.md)."""

    collection: Annotated[str, Meta(min_length=1, max_length=64)]
    top_k: Annotated[int, Meta(ge=1, le=100)] | None = None
    filter: dict[str, Any] | None = None
    mode: Literal["hybrid", "bm25", "dense"] | None = None
    fusion: Literal["rrf", "weighted"] | None = None
    rerank: bool | None = None
    context_tokens: Annotated[int, Meta(ge=64)] | None = None
    query: Annotated[str, Meta(min_length=1)] | None = None  # default: the last user message


class ChatCompletionRequest(Struct, omit_defaults=True):
    model: ModelName
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    user: UserId | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_CHOICES)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    seawall: SeawallOptions | None = None
    rag: RagOptions | None = None
    prompt: PromptRef | None = None  # a prompt from the registry (docs/prompts.md)

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def choices(self) -> int:
        """How many answers the client asked for (``n``)."""
        return self.n or 1


TokenId = Annotated[int, Meta(ge=0, lt=2**31)]
TokenIds = Annotated[list[TokenId],
                     Meta(min_length=1, max_length=MAX_INPUT_TOKEN_IDS)]
# What a provider is asked to embed: texts, or prompts as token ids (one list each).
EmbeddingInputs = list[str] | list[list[int]]


class EmbeddingRequest(Struct, omit_defaults=True):
    """``input``: a string, a list of strings, one prompt as token ids
    (``list[int]``) or several (``list[list[int]]``), as OpenAI accepts (LangChain's
    OpenAIEmbeddings sends token ids by default). msgspec takes one array type in
    a union, so the list's items are checked to be of one kind in ``__post_init__``."""

    model: ModelName
    input: str | Annotated[list[str | TokenId | TokenIds],
                           Meta(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1, le=MAX_DIMENSIONS)] | None = None
    user: UserId | None = None

    def __post_init__(self) -> None:
        if isinstance(self.input, list):
            embedding_inputs(self.input)

    @property
    def inputs(self) -> EmbeddingInputs:
        return embedding_inputs(self.input)


def embedding_inputs(value: Any) -> EmbeddingInputs:
    """A validated ``input`` as a list of texts or a list of token-id lists
    (``list[int]`` is one prompt). Mixed lists are refused, as OpenAI does."""
    if isinstance(value, str):
        return [value]
    kinds = {type(v) for v in value}
    if kinds == {str}:
        return value
    if kinds == {list}:
        return value
    if kinds == {int}:
        if len(value) > MAX_INPUT_TOKEN_IDS:
            raise InvalidRequest(f"An input given as token ids may have at most "
                                 f"{MAX_INPUT_TOKEN_IDS} of them, got {len(value)}.",
                                 param="input", code="invalid_value")
        return [value]
    raise InvalidRequest("`input` must be a string, a list of strings, a list of token ids "
                         "or a list of lists of token ids (not a mix).",
                         param="input", code="invalid_value")


_json = msgspec.json.Decoder()


def decode_json_object(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """The body as a JSON object, nested at most ``max_depth`` levels (0: no
    limit); anything else is a 400 that says what to fix."""
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        obj = _json.decode(body)
    except msgspec.DecodeError as e:
        raise InvalidRequest(f"The request body is not valid JSON: {e}",
                             code="invalid_json") from None
    except RecursionError:  # msgspec's own limit (~1,000 levels)
        raise too_deep(max_depth or 1000) from None
    if not isinstance(obj, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if max_depth and may_exceed(body, max_depth) and depth_exceeds(obj, max_depth):
        raise too_deep(max_depth)
    if has_wide_int(body, obj):
        raise InvalidRequest("The request body has an integer outside the 64-bit range "
                             "(-2**63 to 2**64-1).", code="number_out_of_range")
    return obj


def _param_of(msg: str) -> str | None:
    # msgspec ends with "- at `$.messages[0].role`"; report it as OpenAI's ``param``.
    marker = " - at `$."
    i = msg.rfind(marker)
    return msg[i + len(marker):-1] if i >= 0 else None


def convert(raw: dict[str, Any], typ: type[T]) -> T:
    try:
        return msgspec.convert(raw, typ)
    except RecursionError:
        raise too_deep(DEFAULT_MAX_DEPTH) from None
    except msgspec.ValidationError as e:
        text = str(e)
        param = _param_of(text)
        if param in USER_PARAMS and "length" in text:
            text = (f"`{param}` is at most {MAX_USER} characters: a stable id of your end "
                    "user (hash a longer one)")
        raise InvalidRequest(f"Invalid request: {text}", param=param,
                             code="invalid_value") from None
