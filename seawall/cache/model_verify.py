"""The verifier model: ask a configured chat model whether a cached question asks what
the query asks, before its answer is served.

The rules (seawall/cache/guard.py, seawall/cache/verify.py) catch what the words show:
numbers, names, negations, swapped roles. What they cannot see -- "the best" vs "the
fastest" way, an added condition, two different questions in the same words -- an
instruction-following model can, for a few output tokens instead of a whole answer
(``cache.semantic.verify.model``, off by default). Precision first: only an answer that
starts with "yes" serves the candidate; "no", anything else, a timeout or an error
refuses it, and the reason lands in the metrics and the trace record. The call goes
through the gateway's own router (retries, fallbacks, breakers) as a judge call does,
charged to no client key.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["ModelVerifier", "PROMPT"]

PROMPT = (
    "You decide whether two questions ask exactly the same thing, so that one answer "
    "serves both. They differ if who does what to whom, the order or direction, a number, "
    "a name, a negation, a qualifier (best / fastest / cheapest) or a condition differs. "
    "Reply with one word: yes or no."
)
MAX_TOKENS = 3


class _Answer(Protocol):
    @property
    def text(self) -> str: ...


class Ask(Protocol):
    """:meth:`seawall.quality.judge_call.JudgeCaller.ask`'s shape."""

    async def __call__(self, model: str, messages: list[dict[str, Any]], *,
                       timeout_s: float, max_tokens: int) -> _Answer: ...


class ModelVerifier:
    """``check(model, query, candidate)``: None to serve, else why it was refused
    (``model``: the model said no; ``model-unclear``: neither yes nor no;
    ``model-timeout`` / ``model-error``: no answer in time)."""

    def __init__(self, ask: Ask, timeout_s: float) -> None:
        self._ask = ask
        self.timeout_s = timeout_s

    async def check(self, model: str, query: str, candidate: str) -> str | None:
        messages = [{"role": "system", "content": PROMPT},
                    {"role": "user", "content": f"Question 1: {candidate}\n"
                                                f"Question 2: {query}\nSame question?"}]
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self._ask(model, messages, timeout_s=self.timeout_s + 1,
                                         max_tokens=MAX_TOKENS)
        except TimeoutError:
            return "model-timeout"
        except Exception:  # noqa: BLE001 - no verdict refuses the hit, whatever failed
            return "model-error"
        word = answer.text.strip().lstrip("*\"'`").lower()
        if word.startswith("yes"):
            return None
        return "model" if word.startswith("no") else "model-unclear"
