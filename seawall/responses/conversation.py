"""A ``previous_response_id`` conversation rebuilt from the store, trimmed to
fit the model.

Policy (docs/responses.md): the new request's ``instructions`` and its own
input are always sent. Earlier turns (each one response: its input items and
its output items) are added newest first while they fit the token budget
(``responses.model_chain_tokens[model]``, else ``responses.max_chain_tokens``,
less the new input); the first that does not fit and every older one are
dropped, whole. At most ``responses.max_chain_turns`` turns are loaded at all.
A kept history never starts with tool results whose calls were dropped.
Each turn's tokens are counted once, when it is stored (``tokens``); a turn
without a count is counted here. Runs on a worker thread: building grows
with the conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seawall.responses.store_api import StoredResponse
from seawall.responses.wire import chat_messages


def turn_messages(turn: StoredResponse) -> list[dict[str, Any]]:
    """One stored turn as chat messages: its input, then its output."""
    return chat_messages(turn.input_items) + chat_messages(turn.output)


@dataclass(slots=True)
class Conversation:
    messages: list[dict[str, Any]]
    turns_kept: int = 0
    turns_dropped: int = 0
    history_tokens: int = 0  # of the earlier turns sent


def build(instructions: str | None, chain: list[StoredResponse],
          current: list[dict[str, Any]], budget: int,
          count: Callable[[list[dict[str, Any]]], int]) -> Conversation:
    """Messages for the model: instructions, the earlier turns that fit, the new input."""
    now = chat_messages(current)
    left = budget - count(now)
    kept: list[list[dict[str, Any]]] = []
    used = 0
    for turn in reversed(chain):
        msgs = turn_messages(turn)
        cost = turn.tokens if turn.tokens is not None else count(msgs)
        if cost > left - used:
            break
        kept.append(msgs)
        used += cost
    history = [m for msgs in reversed(kept) for m in msgs]
    while history and history[0]["role"] == "tool":  # its call was in a dropped turn
        history.pop(0)
    head = [{"role": "system", "content": instructions}] if instructions else []
    return Conversation(head + history + now, turns_kept=len(kept),
                        turns_dropped=len(chain) - len(kept), history_tokens=used)
