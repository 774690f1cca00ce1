"""Reversible masking: detected values become ``<EMAIL_1>``-style placeholders
on the way upstream and are put back in the answer, streamed or not.

A placeholder may arrive split across stream chunks (``<EMA`` then ``IL_1>``):
the restorer holds back only a trailing piece that could still become one of
this request's placeholders (at most the longest placeholder's length), and
lets everything else through at once.
"""

from __future__ import annotations

import re

from seawall.guardrails.detectors import Finding

_PLACEHOLDER = re.compile(r"<([A-Z_]+)_(\d+)>")
_PARTIAL = re.compile(r"<([A-Z_]*)(\d*)")


def label(detector: str) -> str:
    return detector.upper()


def redacted(detector: str) -> str:
    """What stands in for a value in a trace record or a masked answer (not reversible)."""
    return f"[REDACTED:{detector}]"


def replace(text: str, findings: list[Finding], sub: object) -> str:
    """``text`` with each finding's span replaced by ``sub(finding, value)``."""
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(text[pos:f.start])
        out.append(sub(f, text[f.start:f.end]))  # type: ignore[operator]
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


class Vault:
    """One request's placeholders: the same value always gets the same one."""

    __slots__ = ("by_value", "by_token", "_counts", "longest")

    def __init__(self) -> None:
        self.by_value: dict[str, str] = {}
        self.by_token: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self.longest = 0

    def __bool__(self) -> bool:
        return bool(self.by_token)

    def token(self, detector: str, value: str) -> str:
        tok = self.by_value.get(value)
        if tok is None:
            lab = label(detector)
            n = self._counts.get(lab, 0) + 1
            self._counts[lab] = n
            tok = f"<{lab}_{n}>"
            self.by_value[value] = tok
            self.by_token[tok] = value
            self.longest = max(self.longest, len(tok))
        return tok

    def mask(self, text: str, findings: list[Finding]) -> str:
        return replace(text, findings, lambda f, v: self.token(f.detector, v))

    def restore(self, text: str) -> str:
        if "<" not in text:
            return text
        by_token = self.by_token
        return _PLACEHOLDER.sub(lambda m: by_token.get(m.group(), m.group()), text)

    def remask(self, text: str) -> str:
        """``text`` with this request's masked values replaced by their
        placeholders again (a partial answer sent back upstream on resumption)."""
        for value in sorted(self.by_value, key=len, reverse=True):
            if value in text:
                text = text.replace(value, self.by_value[value])
        return text

    def partial_at(self, text: str) -> int:
        """Where a trailing, possibly unfinished placeholder starts (len(text): none).
        Checked against the few labels in use, not every placeholder: a hostile
        answer of many ``<`` cannot make it cost more than that."""
        cut = text.rfind("<", max(0, len(text) - self.longest))
        if cut < 0:
            return len(text)
        m = _PARTIAL.fullmatch(text, cut)
        if m is None:
            return len(text)
        label, digits = m.group(1), m.group(2)
        for lab, count in self._counts.items():
            head = lab + "_"
            if not digits and head.startswith(label):
                return cut  # "<", "<EMA", "<CREDIT_CARD_"
            if digits and label == head and len(digits) <= len(str(count)):
                return cut  # "<EMAIL_1" waiting for ">" (or "2" of "<EMAIL_12>")
        return len(text)

class StreamRestorer:
    """Restores placeholders in a chunk stream, per choice and per tool call."""

    __slots__ = ("vault", "pending")

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.pending: dict[tuple[int, int], str] = {}  # (choice, tool call or -1) -> held text

    def feed(self, where: tuple[int, int], text: str) -> str:
        held = self.pending.pop(where, None)
        if held is not None:
            text = held + text
        cut = self.vault.partial_at(text)
        if cut < len(text):
            self.pending[where] = text[cut:]
            text = text[:cut]
        return self.vault.restore(text)

    def flush(self, where: tuple[int, int]) -> str:
        """What is still held for ``where`` (the choice ended: it was no placeholder)."""
        return self.vault.restore(self.pending.pop(where, ""))
