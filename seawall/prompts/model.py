"""What a prompt version is: messages (or one template), declared variables,
model parameters and metadata, validated from a plain mapping.

One validation path for every way in (a YAML file, a Markdown file's front
matter, the Python API, a row read back from the store), so a prompt that was
accepted once is accepted again, and every error names the field to fix.
The content hash is taken over the canonical form (``template`` expanded to
its system message, JSON values only), so two spellings of the same prompt
are the same version.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta, Struct

from seawall.prompts.errors import SpecError

__all__ = ["LABEL_RE", "LATEST", "NAME_RE", "PARAMS", "PRODUCTION", "ROLES", "LabelMove", "Params",
           "PromptMessage", "PromptSpec", "PromptVersion", "Variable", "check_label",
           "check_name", "parse_spec", "spec_from_mapping"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
LABEL_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
_VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ROLES = ("system", "developer", "user", "assistant")
PRODUCTION = "production"
LATEST = "latest"  # a virtual label: the newest version (cannot be set)


class Params(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """The generation parameters a prompt may carry: the same bounds as the
    wire format, so a pushed prompt can never make a request invalid."""

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    response_format: dict[str, Any] | None = None


PARAMS: tuple[str, ...] = Params.__struct_fields__
_FIELDS = ("name", "description", "model", "template", "messages", "variables", "metadata",
           *PARAMS)


@dataclass(frozen=True, slots=True)
class PromptMessage:
    role: Literal["system", "developer", "user", "assistant"]
    content: str  # a Jinja template


@dataclass(frozen=True, slots=True)
class Variable:
    description: str | None = None
    required: bool = True  # False when a default is declared
    default: Any = None


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One version's content (the prompt's name is not part of it)."""

    messages: tuple[PromptMessage, ...]
    variables: dict[str, Variable] = field(default_factory=dict)
    declared: bool = False  # a ``variables`` section was given (then templates use only those)
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    from_template: bool = field(default=False, compare=False)  # spelled ``template:``

    def field_of(self, index: int) -> str:
        """Where message ``index`` was written, for errors."""
        return "template" if self.from_template else f"messages[{index}].content"

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: what is stored and hashed. ``from_dict`` inverts it."""
        out: dict[str, Any] = {}
        if self.description is not None:
            out["description"] = self.description
        if self.model is not None:
            out["model"] = self.model
        out.update(self.params)
        out["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        if self.declared:
            out["variables"] = {n: _variable_dict(v) for n, v in self.variables.items()}
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptSpec:
        return parse_spec(data)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
                              ).hexdigest()

    def document(self, name: str) -> dict[str, Any]:
        """The file form, for people: ``name`` first, a lone system message as
        ``template``."""
        body = self.to_dict()
        messages = body.pop("messages")
        doc: dict[str, Any] = {"name": name}
        doc.update({k: body.pop(k) for k in ("description", "model") if k in body})
        doc.update({k: body.pop(k) for k in PARAMS if k in body})
        if len(messages) == 1 and messages[0]["role"] == "system":
            doc["template"] = messages[0]["content"]
        else:
            doc["messages"] = messages
        doc.update(body)  # variables, metadata
        return doc


def _variable_dict(v: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if v.description is not None:
        out["description"] = v.description
    if not v.required:
        out["default"] = v.default
    return out


@dataclass(frozen=True, slots=True)
class PromptVersion:
    name: str
    version: int
    spec: PromptSpec
    content_hash: str
    created_at: float
    author: str | None = None
    source: str | None = None  # the file it was pushed from

    @property
    def ref(self) -> str:
        """``name@version``: what enters the trace and the cache scope."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class LabelMove:
    """One move of a label: the history ``rollback`` walks back."""

    id: int
    name: str
    label: str
    from_version: int | None  # None: the label was created by this move
    to_version: int
    action: Literal["push", "label", "rollback"]
    actor: str | None
    at: float


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError("name", f"{name!r} is not a valid prompt name: use letters, digits, "
                        "'_', '.', '-' (starting with a letter or digit), at most 100")
    return name


def check_label(label: str) -> str:
    if not isinstance(label, str) or not LABEL_RE.match(label):
        raise SpecError("label", f"{label!r} is not a valid label: use a-z, 0-9, '_' and '-'")
    if label == LATEST:
        raise SpecError("label", "'latest' always means the newest version; it cannot be set")
    return label


def _json_value(value: Any, where: str) -> Any:
    """``value`` as JSON types only (YAML dates become strings), so a stored
    version reads back equal to what was pushed."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError as e:
        raise SpecError(where, f"must be JSON-like data: {e}") from None


def _text(value: Any, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise SpecError(where, f"must be a string, not {type(value).__name__}")
    if not empty and not value.strip():
        raise SpecError(where, "must not be empty")
    return value


def _messages(data: Mapping[str, Any]) -> tuple[PromptMessage, ...]:
    has_template, has_messages = "template" in data, "messages" in data
    if has_template == has_messages:
        raise SpecError("template", "give either `template` (one system message) or "
                        "`messages` (a list of {role, content}), not both"
                        if has_template else "missing: give `template` or `messages`")
    if has_template:
        return (PromptMessage("system", _text(data["template"], "template", empty=False)),)
    raw = data["messages"]
    if not isinstance(raw, list) or not raw:
        raise SpecError("messages", "must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise SpecError(where, "must be a mapping with `role` and `content`")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise SpecError(f"{where}.{extra[0]}", "unknown field; a message has `role` and "
                            "`content`")
        role = m.get("role")
        if role not in ROLES:
            raise SpecError(f"{where}.role", f"must be one of {', '.join(ROLES)}, not {role!r}")
        out.append(PromptMessage(role, _text(m.get("content"), f"{where}.content", empty=False)))
    return tuple(out)


def _variables(raw: Any) -> dict[str, Variable]:
    if raw is None:
        return {}
    if isinstance(raw, list):  # a bare list of names
        raw = {name: None for name in raw}
    if not isinstance(raw, Mapping):
        raise SpecError("variables", "must map each variable name to a description or to "
                        "{description, default}")
    out: dict[str, Variable] = {}
    for name, decl in raw.items():
        where = f"variables.{name}"
        if not isinstance(name, str) or not _VARIABLE_RE.match(name):
            raise SpecError(where, "a variable name is a Python-style identifier")
        if decl is None:
            out[name] = Variable()
        elif isinstance(decl, str):
            out[name] = Variable(description=decl)
        elif isinstance(decl, Mapping):
            extra = sorted(set(decl) - {"description", "default"})
            if extra:
                raise SpecError(f"{where}.{extra[0]}", "unknown field; a variable has "
                                "`description` and `default`")
            desc = decl.get("description")
            if desc is not None:
                _text(desc, f"{where}.description")
            if "default" in decl:
                out[name] = Variable(desc, required=False,
                                     default=_json_value(decl["default"], f"{where}.default"))
            else:
                out[name] = Variable(desc)
        else:
            raise SpecError(where, "must be a description or {description, default}")
    return out


def _params(data: Mapping[str, Any]) -> dict[str, Any]:
    given = {k: data[k] for k in PARAMS if k in data and data[k] is not None}
    try:
        params = msgspec.convert(given, Params)
    except msgspec.ValidationError as e:
        text = str(e)
        marker = " - at `$."
        at = text.rfind(marker)
        where = text[at + len(marker):-1] if at >= 0 else ""
        raise SpecError(where, text[:at] if at >= 0 else text) from None
    out: dict[str, Any] = _json_value(msgspec.to_builtins(params), "parameters")
    return out


def spec_from_mapping(data: Mapping[str, Any], name: str) -> tuple[str, PromptSpec]:
    """Validate a prompt definition; ``name`` is the default name (a file's
    stem) when the mapping has no ``name:``. Raises :class:`SpecError`."""
    spec = parse_spec(data)
    return check_name(data.get("name", name)), spec


def parse_spec(data: Mapping[str, Any]) -> PromptSpec:
    """Validate a prompt's content (a ``name`` field is allowed and ignored)."""
    if not isinstance(data, Mapping):
        raise SpecError("", "a prompt is a mapping of fields (name, template or messages, ...)")
    for key in data:
        if key not in _FIELDS:
            near = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f" (did you mean `{near[0]}`?)" if near else ""
            raise SpecError(str(key), f"unknown field{hint}; allowed: {', '.join(_FIELDS)}")
    description = data.get("description")
    if description is not None:
        _text(description, "description")
    model = data.get("model")
    if model is not None:
        _text(model, "model", empty=False)
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise SpecError("metadata", "must be a mapping")
    return PromptSpec(
        messages=_messages(data), variables=_variables(data.get("variables")),
        declared=data.get("variables") is not None, model=model, params=_params(data),
        description=description, metadata=_json_value(dict(metadata), "metadata"),
        from_template="template" in data)
