"""Answers of last resort, for when every deployment and fallback failed.

Tried in order: a rule whose pattern matches the last user message, then
the model's static answer. (A cached answer comes first once the response
cache exists.) Whatever answers is marked: ``x-seawall-degraded`` header,
``seawall_degraded_total`` metric and the trace record's ``degraded`` field.
"""

from __future__ import annotations

import re
from typing import Any

from seawall.providers.registry import LogicalModel


def last_user_text(raw: dict[str, Any] | None) -> str:
    for m in reversed((raw or {}).get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text") or "") for p in content
                                if isinstance(p, dict) and p.get("type") == "text")
            return ""
    return ""


class DegradedAnswers:
    def __init__(self) -> None:
        self._compiled: dict[str, re.Pattern[str]] = {}

    def _pattern(self, source: str) -> re.Pattern[str]:
        found = self._compiled.get(source)
        if found is None:
            found = self._compiled[source] = re.compile(source, re.IGNORECASE)
        return found

    def answer(self, model: LogicalModel, raw: dict[str, Any] | None) -> tuple[str, str] | None:
        """``(mode, text)``: mode is ``"rule"`` or ``"static"``; None if neither applies."""
        d = model.degraded
        if d.rules:
            text = last_user_text(raw)
            for rule in d.rules:
                if self._pattern(rule.match).search(text):
                    return "rule", rule.answer
        if d.answer is not None:
            return "static", d.answer
        return None
