"""Cheap text features of a chat request, for routing.

Why these: what makes a cheap model fall short is mostly visible on the
surface of a prompt - length and conversation depth (more to keep track of),
code, mathematics, explicit reasoning asks ("prove", "step by step"), and tight
output constraints - while greetings, translations and summaries rarely need a
strong model. The rules router reads them directly; the learned router uses
them beside the embedding (scaled).

Speed: no regular expressions; byte-table translations, set lookups and
substring counts (all in C) over at most ``MAX_SCAN_CHARS`` characters of the
last user message (head and tail), so a request costs microseconds to tens of
microseconds however long it is. Token counts are estimated from characters
(about 4 per token for English: a router needs a scale, not a bill).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FEATURE_NAMES",
    "MAX_SCAN_CHARS",
    "estimate_tokens",
    "message_text",
    "routing_text",
    "text_features",
]

FEATURE_NAMES: list[str] = [
    "log_tokens",       # log1p(prompt tokens of the whole request)
    "log_last_tokens",  # log1p(tokens of the last user message)
    "log_user_turns",   # log1p(number of user messages)
    "has_system",       # a system message is present
    "code_fence",       # ``` fence in the last user message
    "code_lines",       # share of its lines that look like code
    "log_code_tokens",  # log1p(code-like tokens: def, return, {, };, =>, #include ...)
    "math_chars",       # share of its non-space characters that are digits/operators
    "log_latex",        # log1p(LaTeX commands and $...$ spans)
    "equation",         # something like "x^2 + 3 = y" or "f(x) ="
    "log_numbers",      # log1p(numbers)
    "kw_reasoning",     # prove, derive, step by step, explain why, solve, calculate ...
    "kw_simple",        # translate, summarize, rephrase, define, hello, thanks ...
    "kw_creative",      # story, poem, essay, email, blog post ...
    "kw_constraints",   # exactly, at least, no more than, json, table, bullet ...
    "multiple_choice",  # three or more "A." / "(b)" / "C)" option lines
    "log_questions",    # log1p("?" count)
    "log_lines",        # log1p(lines)
]

FeatureVector = npt.NDArray[np.float32]

MAX_SCAN_CHARS = 3000
CHARS_PER_TOKEN = 4.0

# bytes -> words: ASCII letters lowercased (and '-' kept, for "step-by-step"),
# non-ASCII bytes kept, everything else a space
_WORD_TABLE = bytes(c if (97 <= c <= 122 or c == 45 or c >= 128) else
                    (c + 32 if 65 <= c <= 90 else 32) for c in range(256))


def _normalise(text: str) -> str:
    """Lowercase words separated by single spaces, as the prompt is read."""
    return " ".join(text.encode("utf-8", "replace").translate(_WORD_TABLE).decode(
        "utf-8", "replace").split())


# Single words are looked up in the set of the prompt's words; phrases are
# substring searches. Both run in C, unlike a regex alternation tried at
# every character (40x slower on a 4,000-character prompt).
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "reasoning": (
        "prove", "proof", "derive", "derivation", "step by step", "step-by-step",
        "explain why", "show that", "solve", "calculate", "compute", "evaluate the", "integral",
        "derivative", "theorem", "lemma", "optimize", "optimise", "algorithm", "complexity",
        "reason about", "analyze", "analyse", "debug", "implement", "refactor", "why does",
        "how many", "probability", "justify", "trade-off", "tradeoff", "trade-offs",
    ),
    "simple": (
        "translate", "summarize", "summarise", "summary", "rephrase", "paraphrase", "rewrite",
        "fix the grammar", "fix grammar", "spelling", "typos", "define", "definition of",
        "what is the capital", "synonym", "synonyms", "hello", "hi", "hey", "thanks",
        "thank you", "good morning", "good evening", "good night", "how are you",
        "tell me a joke",
    ),
    "creative": (
        "story", "poem", "haiku", "essay", "email", "e-mail", "blog", "letter", "song", "lyrics",
        "slogan", "tweet", "speech", "script",
    ),
    "constraints": (
        "exactly", "at least", "at most", "no more than", "no less than", "must", "json", "yaml",
        "table", "bullet", "bullets", "format", "without using", "only use", "do not", "don't",
    ),
}
_NORMALISED = {group: {_normalise(w) for w in words} for group, words in _KEYWORDS.items()}
_WORDS = {group: frozenset(w for w in words if " " not in w)
          for group, words in _NORMALISED.items()}
# padded with spaces so "hi" never matches inside "this"
_PHRASES = {group: tuple(sorted(f" {w} " for w in words if " " in w))
            for group, words in _NORMALISED.items()}

# Words that are rare in prose but common in code (no "class", "return", "let").
_CODE_WORDS = frozenset((
    "def", "elif", "const", "var", "void", "struct", "impl", "async", "await", "lambda",
    "printf", "println", "nullptr", "null", "bool", "int", "sql", "regex", "usize", "std",
))
_CODE_SYMBOLS = ("=>", "->", "::", "()", "!=", "==", "++", "&&", "||", "#include", "};",
                 "();", "[]", "</", "/>")
_CODE_LINE_ENDS = (";\n", "{\n", "}\n", "):\n", "\n    ", "\n\t")
_LATEX = ("\\frac", "\\sqrt", "\\int", "\\sum", "\\prod", "\\lim", "\\alpha", "\\beta", "\\pi",
          "\\theta", "\\lambda", "\\cdot", "\\times", "\\leq", "\\geq", "\\infty", "\\mathbb",
          "\\left", "\\begin", "$$", "\\(", "\\[")
_OPTION_MARKS = tuple((f"\n{c}.", f"\n{c})", f"\n({c})", f"\n({c.lower()})")
                      for c in "ABCD")

_MATH_BYTES = b"0123456789+-*/^=<>%"
_SPACE_BYTES = b" \t\r\n"
# bytes -> digit runs: digits (and the . , inside numbers) kept, everything else a space
_DIGIT_TABLE = bytes(c if 48 <= c <= 57 else 32 for c in range(256))


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, Mapping)
                 and part.get("type", "text") in ("text", "input_text")]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def routing_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """What the learned router embeds: the last user message (RouteLLM routes on
    the user's prompt too; earlier turns enter only through the features)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return message_text(messages[-1].get("content")) if messages else ""


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` is (characters / 4): no tokenizer pass."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _scan_window(text: str) -> str:
    """Head and tail of a long text: where the task and its question usually are."""
    if len(text) <= MAX_SCAN_CHARS:
        return text
    head = MAX_SCAN_CHARS * 3 // 4
    return text[:head] + "\n" + text[-(MAX_SCAN_CHARS - head):]


def _all_text(messages: Iterable[Mapping[str, Any]]) -> int:
    return sum(len(message_text(m.get("content"))) for m in messages)


def text_features(messages: Sequence[Mapping[str, Any]]) -> FeatureVector:
    """The request's features, in :data:`FEATURE_NAMES` order (float32).

    Token counts here are always the character estimate, so a learned router
    sees the same feature at training and serving time whatever the caller
    counted; the rules router takes exact counts separately.
    """
    last = routing_text(messages)
    window = _scan_window(last)
    prompt_tokens = math.ceil(_all_text(messages) / CHARS_PER_TOKEN)
    user_turns = sum(1 for m in messages if m.get("role") == "user")
    has_system = any(m.get("role") in ("system", "developer") for m in messages)

    raw = window.encode("utf-8", "replace")
    tokens = raw.translate(_WORD_TABLE).decode("utf-8", "replace").split()
    words = frozenset(tokens)
    spaced = " " + " ".join(tokens) + " "
    counts = {group: len(_WORDS[group] & words)
              + sum(1 for phrase in _PHRASES[group] if phrase in spaced)
              for group in _KEYWORDS}

    lines = window.count("\n") + 1
    text_nl = window + "\n"
    code_lines = min(1.0, sum(text_nl.count(e) for e in _CODE_LINE_ENDS) / lines) \
        if lines > 1 else 0.0
    code_tokens = len(_CODE_WORDS & words) + sum(window.count(s) for s in _CODE_SYMBOLS)
    non_space = max(1, len(raw.translate(None, _SPACE_BYTES)))
    math_chars = (len(raw) - len(raw.translate(None, _MATH_BYTES))) / non_space
    latex = sum(window.count(s) for s in _LATEX) if "\\" in window or "$$" in window else 0
    numbers = len(raw.translate(_DIGIT_TABLE).split())
    equation = latex > 0 or ("=" in window and numbers > 0 and math_chars >= 0.04) or (
        "^" in window and numbers > 0)
    options = 0
    if lines >= 4:
        framed = "\n" + window
        options = sum(1 for marks in _OPTION_MARKS if any(m in framed for m in marks))

    values = (
        math.log1p(prompt_tokens),
        math.log1p(estimate_tokens(last)),
        math.log1p(user_turns),
        float(has_system),
        float("```" in window),
        code_lines,
        math.log1p(code_tokens),
        math_chars,
        math.log1p(latex),
        float(equation),
        math.log1p(numbers),
        float(min(counts["reasoning"], 5)),
        float(min(counts["simple"], 5)),
        float(min(counts["creative"], 5)),
        float(min(counts["constraints"], 5)),
        float(options >= 3),
        math.log1p(window.count("?")),
        math.log1p(lines),
    )
    return np.array(values, dtype=np.float32)
