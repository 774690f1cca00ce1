"""A transparent rules router: a few named penalties and bonuses on the cheap
text features, summed onto a base score.

Why rules beside a learned router: they need no training data and no
embedding, every decision explains itself ("code block + 1,800 tokens"), and an
operator can move one knob and predict the effect. The score is a hand-set
estimate of P(the cheap tier is good enough), clipped to [0, 1]; thresholds
(:mod:`.decide`) turn it into a tier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from seawall.routing.complexity.features import FEATURE_NAMES, text_features

__all__ = ["RuleDecision", "RulesRouter", "RulesSettings"]

_IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}

class RulesSettings(BaseModel):
    """Knobs of the rules router. Penalties lower the score (toward the strong
    tier), bonuses raise it; each is an absolute change of P(cheap is enough)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: float = Field(0.9, ge=0.0, le=1.0,
                        description="Score of a plain, short, single-turn request.")
    medium_tokens: int = Field(400, ge=1, description="Prompt tokens that count as 'long'.")
    medium_penalty: float = Field(0.1, ge=0.0, le=1.0)
    long_tokens: int = Field(1500, ge=1, description="Prompt tokens that count as 'very long'.")
    long_penalty: float = Field(0.25, ge=0.0, le=1.0, description="Replaces medium_penalty.")
    code_penalty: float = Field(0.3, ge=0.0, le=1.0,
                                description="A code block, or enough code-like lines/tokens.")
    code_line_share: float = Field(0.3, ge=0.0, le=1.0,
                                   description="Share of code-like lines that means code.")
    code_token_min: int = Field(4, ge=1, description="Code-like tokens that mean code.")
    math_penalty: float = Field(0.3, ge=0.0, le=1.0,
                                description="LaTeX, an equation, or a dense share of math.")
    math_char_share: float = Field(0.15, ge=0.0, le=1.0,
                                   description="Share of digits/operators that means math.")
    reasoning_penalty: float = Field(0.25, ge=0.0, le=1.0,
                                     description="prove / derive / step by step / solve ...")
    constraints_penalty: float = Field(0.1, ge=0.0, le=1.0,
                                       description="Two or more explicit output constraints.")
    multiple_choice_penalty: float = Field(0.0, ge=0.0, le=1.0)
    deep_turns: int = Field(4, ge=2, description="User turns that make a conversation deep.")
    depth_penalty: float = Field(0.15, ge=0.0, le=1.0)
    simple_bonus: float = Field(0.15, ge=0.0, le=1.0,
                                description="translate / summarize / greeting, no code or math.")
    short_tokens: int = Field(40, ge=1, description="Prompt tokens that count as 'short'.")
    short_bonus: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RulesSettings:
        if not self.short_tokens < self.medium_tokens < self.long_tokens:
            raise ValueError("need short_tokens < medium_tokens < long_tokens "
                             f"(got {self.short_tokens}, {self.medium_tokens}, "
                             f"{self.long_tokens})")
        return self


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """A rules score and why: ``factors`` are (label, signed change) pairs."""

    score: float
    reason: str
    factors: tuple[tuple[str, float], ...]


class RulesRouter:
    """Scores requests with :class:`RulesSettings`; stateless and thread-safe."""

    def __init__(self, settings: RulesSettings | None = None) -> None:
        self.settings = settings or RulesSettings()

    def decide(self, messages: Sequence[Mapping[str, Any]],
               prompt_tokens: int | None = None) -> RuleDecision:
        """Score a chat request (``prompt_tokens`` if already counted)."""
        return self.decide_features(text_features(messages), prompt_tokens)

    def decide_features(self, features: npt.NDArray[np.float32],
                        prompt_tokens: int | None = None) -> RuleDecision:
        """Score precomputed :func:`text_features` (so the learned router and
        the rules can share one feature pass)."""
        s = self.settings
        f = features
        tokens = prompt_tokens if prompt_tokens is not None else round(
            math.expm1(float(f[_IDX["log_tokens"]])))
        factors: list[tuple[str, float]] = []

        if tokens >= s.long_tokens:
            factors.append((f"{tokens:,} tokens", -s.long_penalty))
        elif tokens >= s.medium_tokens:
            factors.append((f"{tokens:,} tokens", -s.medium_penalty))

        fence = f[_IDX["code_fence"]] > 0
        multi_line = f[_IDX["log_lines"]] > math.log1p(1)
        code_lines = multi_line and f[_IDX["code_lines"]] >= s.code_line_share
        code_tokens = math.expm1(float(f[_IDX["log_code_tokens"]])) >= s.code_token_min - 0.5
        code = bool(fence or code_lines or code_tokens)
        if code:
            factors.append(("code block" if fence else "code", -s.code_penalty))

        math_like = (f[_IDX["log_latex"]] > 0 or f[_IDX["equation"]] > 0
                     or f[_IDX["math_chars"]] >= s.math_char_share)
        if math_like:
            factors.append(("math", -s.math_penalty))
        if f[_IDX["kw_reasoning"]] > 0:
            factors.append(("reasoning ask", -s.reasoning_penalty))
        if f[_IDX["kw_constraints"]] >= 2:
            factors.append(("output constraints", -s.constraints_penalty))
        if f[_IDX["multiple_choice"]] > 0:
            factors.append(("multiple choice", -s.multiple_choice_penalty))
        turns = round(math.expm1(float(f[_IDX["log_user_turns"]])))
        if turns >= s.deep_turns:
            factors.append((f"{turns} turns", -s.depth_penalty))
        if f[_IDX["kw_simple"]] > 0 and not code and not math_like:
            factors.append(("simple task", s.simple_bonus))
        if tokens < s.short_tokens:
            factors.append(("short", s.short_bonus))

        factors = [(label, delta) for label, delta in factors if delta != 0.0]
        score = min(1.0, max(0.0, s.base + sum(delta for _, delta in factors)))
        ranked = sorted(factors, key=lambda item: -abs(item[1]))
        penalties = [label for label, delta in ranked if delta < 0]
        if penalties:
            reason = " + ".join(penalties)
        elif ranked:
            reason = " + ".join(label for label, _ in ranked)
        else:
            reason = "plain request"
        return RuleDecision(score=score, reason=reason, factors=tuple(ranked))
